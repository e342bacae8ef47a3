#!/bin/sh
# check-install.sh BUILD_DIR - install dctx to a scratch prefix, then build
# and run a program against it twice: with pkg-config (cc app.c
# $(pkg-config --cflags --libs dctx)) and with CMake's find_package(dctx).
set -eu
build=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null

cat >"$tmp/app.c" <<'C'
#include <dctx/dctx.h>
#include <stdio.h>
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
