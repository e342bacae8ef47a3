#!/bin/sh
# Build streambench in GOPATH mode against Debian's grpc-go source (as the
# grpc-go anchor in ../shared/anchors/grpc-go is built: no module proxy).
set -e
cd "$(dirname "$0")"
export GOPATH="$PWD:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS=
mkdir -p "${1:-bin}"
go build -o "${1:-bin}/streambench" streambench
