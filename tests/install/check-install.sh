#!/bin/sh
# check-install.sh BUILD_DIR - install dctx to a scratch prefix, then build
# and run programs against it: one on dctx.h and rpc.h with pkg-config (cc
# app.c $(pkg-config --cflags --libs dctx)) and with CMake's
# find_package(dctx), and one on rpc_pb.h with pkg-config dctx-pb and
# dctx::dctx_pb, the two that add protobuf-c; then the installed rpcd.
# check-install.sh --prefix PREFIX - the same checks of dctx installed
# there already (the Debian package, unpacked: tests/install/check-deb.sh).
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ "$1" = --prefix ]; then
    prefix=$2
else
    prefix="$tmp/prefix"
    cmake --install "$1" --prefix "$prefix" >/dev/null
fi

cat >"$tmp/app.c" <<'C'
#include <dctx/dctx.h>
#include <dctx/rpc.h>
#include <stdio.h>
#ifdef PROTOBUF_C_VERSION
#error "rpc.h pulled in protobuf-c"
#endif
int main(void)
{
    dctx *c;
    if (dctx_with_timeout(dctx_background(), 1000000, &c) != 0)
        return 1;
    dctx_wait(c, -1);
    int err = dctx_err(c);
    dctx_release(c);
    printf("%s\n", dctx_code_name(err));
    return err == DCTX_DEADLINE_EXCEEDED ? 0 : 1;
}
C

pcdir=$(dirname "$(find "$prefix" -name dctx.pc)")
libdir=$(dirname "$(find "$prefix" -name 'libdctx.so' | head -n 1)")
export PKG_CONFIG_PATH="$pcdir"
# shellcheck disable=SC2046 # pkg-config output is meant to split
cc "$tmp/app.c" -o "$tmp/app_pc" $(pkg-config --cflags --libs dctx)
LD_LIBRARY_PATH="$libdir" "$tmp/app_pc" | grep -qx DEADLINE_EXCEEDED
echo "pkg-config: ok ($(pkg-config --modversion dctx))"

mkdir "$tmp/proj"
cp "$tmp/app.c" "$tmp/proj/app.c"
cat >"$tmp/proj/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(app C)
find_package(dctx 0.1 REQUIRED)
add_executable(app app.c)
target_link_libraries(app PRIVATE dctx::dctx)
CM
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/proj/build" >/dev/null
"$tmp/proj/build/app" | grep -qx DEADLINE_EXCEEDED
echo "find_package: ok"

# A protobuf-c user: rpc_pb.h, through dctx-pb and dctx::dctx_pb.
cat >"$tmp/pb.c" <<'C'
#include <dctx/rpc_pb.h>
#include <stdio.h>
int main(void)
{
    dctx_rpc_result res;
    ProtobufCMessage *resp;
    int rc = dctx_rpc_call(NULL, NULL, "/x.Y/Z", NULL, NULL, &resp, &res);
    printf("%s %s\n", dctx_code_name(rc), protobuf_c_version());
    dctx_rpc_result_free(&res);
    return rc == DCTX_INVALID_ARGUMENT ? 0 : 1;
}
C
# shellcheck disable=SC2046 # pkg-config output is meant to split
cc "$tmp/pb.c" -o "$tmp/pb_pc" $(pkg-config --cflags --libs dctx-pb)
LD_LIBRARY_PATH="$libdir" "$tmp/pb_pc" | grep -q '^INVALID_ARGUMENT '
echo "pkg-config dctx-pb: ok"
mkdir "$tmp/pbproj"
cp "$tmp/pb.c" "$tmp/pbproj/pb.c"
cat >"$tmp/pbproj/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(pb C)
find_package(dctx 0.1 REQUIRED)
add_executable(pb pb.c)
target_link_libraries(pb PRIVATE dctx::dctx_pb)
CM
cmake -S "$tmp/pbproj" -B "$tmp/pbproj/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/pbproj/build" >/dev/null
LD_LIBRARY_PATH="$libdir" "$tmp/pbproj/build/pb" | grep -q '^INVALID_ARGUMENT '
echo "find_package dctx::dctx_pb: ok"

# rpcd as installed: it finds libdctx in its own prefix (its RPATH), with
# no LD_LIBRARY_PATH: --help, then a serve / call round trip.
rpcd="$prefix/bin/rpcd"
env -u LD_LIBRARY_PATH "$rpcd" --help >/dev/null
url="ipc://$tmp/rpcd.ipc"
env -u LD_LIBRARY_PATH "$rpcd" serve --listen "$url" --log "$tmp/rpcd.log" &
served=$!
ok=0
for _ in $(seq 100); do
    out=$(env -u LD_LIBRARY_PATH timeout 10 "$rpcd" call "$url" /dctx.demo.Demo/Echo --data installed 2>/dev/null) &&
        ok=1 && break
    sleep 0.05
done
kill -TERM "$served"
wait "$served" || true
[ "$ok" = 1 ] && [ "$out" = "$(printf 'OK\ninstalled')" ] || {
    echo "the installed rpcd: no serve / call round trip (got: $out)" >&2
    exit 1
}
echo "installed rpcd: ok (--help, serve and call, no LD_LIBRARY_PATH)"
