#!/bin/sh
# check-layers.sh SOURCE_DIR CONTEXT_OBJECTS... -- RPC_OBJECTS...
#
# The library's layers depend one way: lib/rpc/ on lib/context/, never the
# reverse. Checked twice, in the sources and in the objects:
# - lib/context/ includes nothing of nng, protobuf-c, libsodium or lib/rpc/;
# - lib/rpc/ reaches the core only through context/hooks.h and the clock,
#   allocator and futex helpers (never context_impl.h);
# - only <dctx/rpc_pb.h> of the public headers includes protobuf-c;
# - the core's objects leave no symbol of nng, protobuf-c, libsodium or of
#   the RPC layer's objects undefined.
set -eu
src=$1
shift
ctx_objs=""
rpc_objs=""
side=ctx
for o in "$@"; do
    if [ "$o" = "--" ]; then side=rpc; continue; fi
    if [ $side = ctx ]; then ctx_objs="$ctx_objs $o"; else rpc_objs="$rpc_objs $o"; fi
done
fail=0
bad() { echo "layering: $*" >&2; fail=1; }

# file:line:target of every #include in the files given.
includes() {
    grep -Hn '^[[:space:]]*#[[:space:]]*include' "$@" |
        sed -E 's/^([^:]*:[0-9]+):[[:space:]]*#[[:space:]]*include[[:space:]]*([<"][^>"]*[>"]).*/\1:\2/' || true
}

# The core: only its own headers, the public dctx.h and the system's.
hits=$(includes "$src"/lib/context/*.c "$src"/lib/context/*.h |
    grep -E ':[<"](nng/|protobuf-c/|sodium|\.\./|rpc/)|pb-c\.h"|:<dctx/(rpc|wire|trace|rpc_pb|rpcd_module)\.h>' || true)
[ -z "$hits" ] || bad "lib/context/ includes what it must not:
$hits"

# The RPC layer: from the core, only these.
hits=$(includes "$src"/lib/rpc/*.c "$src"/lib/rpc/*.h | grep '"context/' |
    grep -v -E '"context/(hooks|clock|alloc|futex)\.h"' || true)
[ -z "$hits" ] || bad "lib/rpc/ reaches into the core past context/hooks.h:
$hits"
hits=$(includes "$src"/lib/rpc/*.c "$src"/lib/rpc/*.h |
    grep -E '"(context_impl|hooks|clock|alloc|futex|cancel|timer)\.h"' || true)
[ -z "$hits" ] || bad "lib/rpc/ includes a core header without its context/ path:
$hits"

# Public headers: protobuf-c only through rpc_pb.h.
hits=$(includes "$src"/lib/include/dctx/*.h | grep -v '/rpc_pb\.h:' | grep ':<protobuf-c/' || true)
[ -z "$hits" ] || bad "a public header other than rpc_pb.h includes protobuf-c:
$hits"

# Objects: what the core leaves undefined must come from libc or itself.
rpc_defined=$(nm --defined-only -g $rpc_objs | awk 'NF == 3 { print $3 }' | sort -u)
ctx_undefined=$(nm -u $ctx_objs | awk '{ print $NF }' | sort -u)
hits=$(printf '%s\n' "$ctx_undefined" | grep -E '^(nng_|nni_|protobuf_c_|sodium_|crypto_|randombytes_)' || true)
[ -z "$hits" ] || bad "the core's objects need nng, protobuf-c or libsodium:
$hits"
hits=$(printf '%s\n' "$ctx_undefined" | grep -x -F "$rpc_defined" || true)
[ -z "$hits" ] || bad "the core's objects need symbols of lib/rpc/:
$hits"

[ $fail -eq 0 ] || exit 1
echo "layering: ok ($(echo $ctx_objs | wc -w) core objects, $(echo $rpc_objs | wc -w) rpc objects)"
