#!/bin/sh
# check-deb.sh SOURCE_DIR - the Debian package as users get it:
# scripts/package builds it; its control fields name Debian 12's packages of
# nng, protobuf-c and libsodium; it holds the library, the headers, the
# pkg-config and CMake files and rpcd; apt resolves its installation on this
# system (apt-get --simulate, which changes nothing); unpacked into a
# scratch root, it passes check-install.sh (programs built against it, and
# the installed rpcd serving and calling with no LD_LIBRARY_PATH).
# scripts/check-deb-fresh installs it for real, in a new Debian 12 root.
set -eu
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

deb=$("$src/scripts/package" "$tmp/dist")
echo "built: $(basename "$deb")"
[ "$(dpkg-deb -f "$deb" Package)" = dctx ] || fail "the package is not named dctx"
depends=$(dpkg-deb -f "$deb" Depends)
for p in libnng1 libprotobuf-c1 libsodium23; do
    echo "$depends" | grep -q "\\b$p\\b" || fail "Depends does not name $p: $depends"
done
echo "depends: $depends"
contents=$(dpkg-deb -c "$deb" | awk '{ print $6 }')
for f in ./usr/bin/rpcd ./usr/include/dctx/dctx.h ./usr/include/dctx/rpc.h /libdctx.so.0 \
    /pkgconfig/dctx.pc /pkgconfig/dctx-pb.pc /cmake/dctx/dctx-config.cmake; do
    echo "$contents" | grep -q -- "$f\$" || fail "the package holds no $f"
done
echo "contents: ok"
if command -v apt-get >/dev/null; then
    apt-get install --simulate "$deb" >"$tmp/apt.txt" 2>&1 || {
        cat "$tmp/apt.txt" >&2
        fail "apt cannot install it here"
    }
    grep -q '^Inst dctx ' "$tmp/apt.txt" || fail "apt would not install dctx: $(cat "$tmp/apt.txt")"
    echo "apt-get install --simulate: ok"
fi
dpkg-deb -x "$deb" "$tmp/root"
"$src/tests/install/check-install.sh" --prefix "$tmp/root/usr"
echo "all package checks passed"
