#!/bin/sh
# check-headers.sh INCLUDE_DIR - every public header compiles alone, as C11
# and as C++, with the warnings the library builds with: a user includes
# any one of them first.
set -eu
inc=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for h in "$inc"/dctx/*.h; do
    name=dctx/$(basename "$h")
    printf '#include <%s>\n' "$name" >"$tmp/one.c"
    cp "$tmp/one.c" "$tmp/one.cc"
    if ! cc -std=c11 -fsyntax-only -Wall -Wextra -Werror -Wstrict-prototypes -I"$inc" "$tmp/one.c"; then
        echo "headers: $name does not compile alone as C" >&2
        fail=1
    fi
    if ! c++ -fsyntax-only -Wall -Wextra -Werror -I"$inc" "$tmp/one.cc"; then
        echo "headers: $name does not compile alone as C++" >&2
        fail=1
    fi
done
[ $fail -eq 0 ] || exit 1
echo "headers: ok ($(ls "$inc"/dctx/*.h | wc -l) headers, C and C++)"
