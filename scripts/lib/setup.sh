# setup.sh - sourced by scripts/test and scripts/demo: installs the Debian
# packages dctx builds with, when any is missing (apt-get update first).
# Needs root, or sudo. For the tests only: clang and libclang-rt-14-dev (the
# fuzzers: libFuzzer), libcmocka-dev, iproute2 (`ip`, for
# scripts/netns-test), python3 (its json module parses rpcd's JSON in
# tests/rpcd), clang-format (tests/layout checks the formatting), prometheus
# (its server and promtool check rpcd's /metrics), openssl (certificates
# for the TLS tests, made at test time), chromium (renders the
# pages of `rpcd trace --html`) and debootstrap (a fresh Debian root to
# install the package in), python3-grpcio and golang-go with
# golang-google-grpc-dev (the gRPC peers of tests/grpc: Python's grpcio
# and grpc-go, built offline); the rest builds dctx (the Dockerfile
# installs those), libgrpc-dev included (the gRPC edge).

DCTX_PACKAGES="build-essential cmake pkg-config libnng-dev libprotobuf-c-dev protobuf-c-compiler libsodium-dev libgrpc-dev python3-grpcio golang-go golang-google-grpc-dev clang libclang-rt-14-dev libcmocka-dev iproute2 python3 clang-format prometheus openssl chromium debootstrap"

dctx_install_packages() {
    local missing=()
    for p in $DCTX_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "== installing: ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# dctx_build DIR [cmake args...]: configure and build into DIR.
dctx_build() {
    local dir=$1
    shift
    cmake -S . -B "$dir" -DDCTX_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j "$(nproc)"
}
