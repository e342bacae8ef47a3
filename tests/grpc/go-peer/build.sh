#!/bin/sh
# Build grpcpeer in GOPATH mode against Debian's grpc-go source
# (golang-google-grpc-dev, /usr/share/gocode): offline, no module proxy.
# Usage: build.sh [OUTDIR]   (default: bin)
set -e
cd "$(dirname "$0")"
export GOPATH="$PWD:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS=
mkdir -p "${1:-bin}"
go build -o "${1:-bin}/grpcpeer" grpcpeer
