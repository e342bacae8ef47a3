#!/usr/bin/env bash
# check_rpcd_symbols.sh RPCD - rpcd exports its symbols to the modules it
# dlopens (--module), so each global it defines must be in a namespace no
# module uses: main, rpcd_*, the toolchain's own, and dctx_* only when
# libdctx is linked into rpcd statically (then the library's API lives in
# rpcd). With libdctx linked dynamically, a dctx_* defined by rpcd would
# interpose on the library's own, so it fails the check too.
set -uo pipefail
rpcd=${1:?usage: check_rpcd_symbols.sh path/to/rpcd}

# Both tables: the full one (absent from a stripped binary) and the dynamic
# one (what modules see).
symbols=$( { nm --defined-only -g "$rpcd" 2>/dev/null; nm -D --defined-only "$rpcd" 2>/dev/null; } |
    awk 'NF >= 3 { print $3 }' | sort -u)
if ! grep -qx main <<<"$symbols"; then
    echo "FAIL: nm lists no main in $rpcd: the check would prove nothing"
    exit 1
fi
if ! nm -D --defined-only "$rpcd" | awk '{ print $3 }' | grep -q '^rpcd_'; then
    echo "FAIL: $rpcd exports no rpcd_* symbol: modules would not see rpcd (ENABLE_EXPORTS?)"
    exit 1
fi

if readelf -d "$rpcd" | grep -q 'NEEDED.*\[libdctx\.so'; then
    linkage=dynamic
    allowed='^(main|rpcd_.*)$'
else
    linkage=static
    allowed='^(main|rpcd_.*|dctx_.*)$'
fi
# The toolchain's: C start-up and linker-defined symbols; copies of a
# shared library's data made by copy relocations (stdout@GLIBC_2.2.5);
# sanitizer and coverage runtimes.
toolchain='^(_start|_init|_fini|__libc_csu_init|__libc_csu_fini|_IO_stdin_used|__data_start'
toolchain+='|data_start|__dso_handle|_edata|_end|__bss_start|__TMC_END__|_dl_relocate_static_pie'
toolchain+='|.*@.*|__(asan|lsan|tsan|ubsan|sanitizer|odr_asan|gcov)[._].*)$'

bad=$(grep -Ev "$allowed" <<<"$symbols" | grep -Ev "$toolchain")
names="main, rpcd_*"
[ $linkage = static ] && names+=", dctx_*"
if [ -n "$bad" ]; then
    echo "FAIL: rpcd (libdctx linked $linkage) defines globals outside $names," \
        "where a module's own names can collide:"
    sed 's/^/    /' <<<"$bad"
    exit 1
fi
echo "ok: every global rpcd defines is $names or the toolchain's" \
    "($(grep -c . <<<"$symbols") symbols, libdctx linked $linkage)"
