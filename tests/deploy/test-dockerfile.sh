#!/bin/sh
# test-dockerfile.sh SOURCE_DIR RPCD LIBDCTX - the Dockerfile, checked
# without a Docker engine (none runs on the test machines):
#   - every stage starts FROM Debian 12 (debian:12*, debian:bookworm*) or an
#     earlier stage; packages come from Debian only: apt-get is the only
#     installer, no ADD of a URL, no curl/wget/pip/npm/git in RUN;
#   - no ENTRYPOINT: docker-compose.yml's commands start with `rpcd` itself;
#   - every COPY from the build context names a file or directory that
#     exists and that .dockerignore does not leave out;
#   - the build stage installs what scripts/lib/setup.sh installs to build
#     (DCTX_PACKAGES without the test-only ones) and builds with CMake;
#   - the final stage installs, for every shared library rpcd and libdctx
#     need (readelf -d), and those that rpcd's other libdctx* libraries
#     (libdctx_grpc, found next to LIBDCTX) need, the Debian package that
#     holds it here (dpkg -S), so the runtime image has them (libc6 is in
#     every Debian image).
# POSIX sh and awk. The last check needs readelf and dpkg; without them it
# says so and is left out.
set -eu

src=${1:?usage: test-dockerfile.sh SOURCE_DIR RPCD LIBDCTX}
rpcd=${2:?usage: test-dockerfile.sh SOURCE_DIR RPCD LIBDCTX}
libdctx=${3:?usage: test-dockerfile.sh SOURCE_DIR RPCD LIBDCTX}
dockerfile=$src/Dockerfile
# Installed by setup.sh for the tests only, not needed to build rpcd (the
# gRPC peers of tests/grpc and tests/deploy included: Python's grpcio, Go's).
test_only="clang libclang-rt-14-dev libcmocka-dev iproute2 python3 clang-format prometheus openssl chromium debootstrap python3-grpcio golang-go golang-google-grpc-dev"
failures=0
bad() {
    echo "test-dockerfile: FAIL: $*" >&2
    failures=$((failures + 1))
}
ok() { echo "ok: $*"; }

[ -f "$dockerfile" ] || { echo "test-dockerfile: no $dockerfile" >&2; exit 1; }
dir=$(mktemp -d /tmp/dctx-dockerfile-XXXXXX)
trap 'rm -rf "$dir"' EXIT

# The Dockerfile as instructions, one per line: "STAGE INSTRUCTION ARGS...",
# continuation lines joined, comments dropped. STAGE counts FROMs from 1.
awk '
    /^[ \t]*#/ && !cont { next }
    {
        line = $0
        sub(/\r$/, "", line)
        more = sub(/\\[ \t]*$/, "", line)
        buf = cont ? buf " " line : line
        cont = more
        if (cont) next
        if (buf ~ /^[ \t]*$/) next
        sub(/^[ \t]+/, "", buf)
        gsub(/[ \t]+/, " ", buf)
        split(buf, w, " ")
        if (toupper(w[1]) == "FROM") stage++
        print stage + 0, buf
        buf = ""
    }' "$dockerfile" >"$dir/instr"
last=$(awk 'END { print $1 }' "$dir/instr")

# ---- bases: Debian 12 or an earlier stage ---------------------------------------
stages=""
while read -r stage instr rest; do
    [ "$(echo "$instr" | tr '[:lower:]' '[:upper:]')" = FROM ] || continue
    set -f
    # shellcheck disable=SC2086 # split into its words, on purpose
    set -- $rest
    set +f
    image=$1
    [ "${1#--platform}" != "$1" ] && image=$2
    case " $stages " in
    *" $image "*) ok "stage $stage: FROM $image (an earlier stage)" ;;
    *)
        case $image in
        debian:12 | debian:12-* | debian:12.* | debian:bookworm | debian:bookworm-*) ok "stage $stage: FROM $image" ;;
        *) bad "stage $stage: FROM $image: Debian 12 (debian:12-slim) expected" ;;
        esac
        ;;
    esac
    # "FROM image AS name"
    [ "$#" -ge 3 ] && stages="$stages $3"
done <"$dir/instr"
[ "$last" -ge 2 ] && ok "multi-stage: $last stages" || echo "note: a single stage (a multi-stage build keeps the runtime image small)"

# ---- packages from Debian only ----------------------------------------------------
fetch='^[0-9]+ RUN .*((curl|wget) [^&;]*(https?|ftp)://|pip3? install|npm (install|i) |git clone|\| *(ba)?sh( |$))'
if grep -Eiq "$fetch" "$dir/instr"; then
    bad "a RUN fetches software other than with apt-get: $(grep -Ei "$fetch" "$dir/instr" | head -n 1)"
else
    ok "RUN installs with apt-get only"
fi
if grep -Eiq '^[0-9]+ ADD .*(https?|ftp)://' "$dir/instr"; then bad "ADD of a URL"; else ok "no ADD of a URL"; fi
if grep -Eiq '^[0-9]+ ENTRYPOINT' "$dir/instr"; then
    bad "an ENTRYPOINT: docker-compose.yml's commands are whole command lines (rpcd serve ...)"
else
    ok "no ENTRYPOINT"
fi

# ---- COPY from the build context ------------------------------------------------------
# .dockerignore patterns (simple ones: names, dir/, name*), as shell globs.
ignored() { # PATH: 0 if .dockerignore leaves it out
    [ -f "$src/.dockerignore" ] || return 1
    p=${1#./}
    p=${p%/}
    while read -r pat; do
        case $pat in "" | "#"*) continue ;; esac
        pat=${pat#/}
        pat=${pat%/}
        # shellcheck disable=SC2254
        case $p in $pat | $pat/*) return 0 ;; esac
    done <"$src/.dockerignore"
    return 1
}
grep -Ei '^[0-9]+ COPY ' "$dir/instr" | grep -Eiv ' --from=' >"$dir/copies" || true
while read -r stage _ rest; do
    set -f
    # shellcheck disable=SC2086 # split into its words, on purpose
    set -- $rest
    set +f
    while [ "$#" -gt 1 ]; do # all but the last word: sources
        case $1 in --*) shift; continue ;; esac
        if [ ! -e "$src/$1" ]; then bad "stage $stage: COPY $1: no such file in the source tree"
        elif ignored "$1"; then bad "stage $stage: COPY $1: left out by .dockerignore"
        else ok "stage $stage: COPY $1"
        fi
        shift
    done
done <"$dir/copies"

# ---- apt-get install lists per stage ------------------------------------------------------
packages() { # STAGE: the packages its RUN lines install with apt-get
    awk -v s="$1" '
        $1 == s && toupper($2) == "RUN" {
            n = split($0, w, " ")
            for (i = 3; i <= n; i++) {
                if (w[i] == "install" && w[i - 1] ~ /apt(-get)?$/) { on = 1; continue }
                if (w[i] == "&&" || w[i] ~ /;$/) on = 0
                if (on && w[i] !~ /^-/) print w[i]
            }
        }' "$dir/instr"
}
build_stage=$(awk 'toupper($2) == "RUN" && / cmake --build / { print $1; exit }' "$dir/instr")
if [ -z "$build_stage" ]; then
    bad "no stage builds with CMake (cmake --build)"
else
    ok "stage $build_stage builds with CMake"
    packages "$build_stage" >"$dir/build-packages"
    need=$(sed -n 's/^DCTX_PACKAGES="\(.*\)"$/\1/p' "$src/scripts/lib/setup.sh")
    [ -n "$need" ] || bad "no DCTX_PACKAGES in scripts/lib/setup.sh"
    for p in $need; do
        case " $test_only " in *" $p "*) continue ;; esac
        if grep -qx -- "$p" "$dir/build-packages"; then ok "build stage installs $p"; else bad "build stage does not install $p (scripts/lib/setup.sh builds with it)"; fi
    done
fi

# ---- the runtime libraries -------------------------------------------------------------------
if ! command -v readelf >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    echo "note: no readelf or dpkg here: the runtime libraries are not checked"
else
    packages "$last" >"$dir/runtime-packages"
    needed() { readelf -d "$@" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u; }
    # rpcd's other libraries of this tree (libdctx_grpc.so.0), built next to libdctx
    ours=""
    for lib in $(needed "$rpcd"); do
        case $lib in
        libdctx.so*) ;;
        libdctx*.so*)
            [ -f "$(dirname "$libdctx")/$lib" ] || { bad "$lib: rpcd needs it, not found next to $libdctx"; continue; }
            ours="$ours $(dirname "$libdctx")/$lib"
            ;;
        esac
    done
    # shellcheck disable=SC2086 # paths without blanks, split on purpose
    for lib in $(needed "$rpcd" "$libdctx" $ours); do
        case $lib in
        libdctx.so* | libdctx_*.so*) continue ;;          # built in the image
        libasan* | libubsan* | libtsan* | liblsan*) continue ;; # sanitizer builds only
        esac
        path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
        [ -n "$path" ] || { bad "$lib: not found by ldconfig here"; continue; }
        pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n 1 | sed 's/:.*//')
        [ -n "$pkg" ] || pkg=$(dpkg -S "$path" 2>/dev/null | head -n 1 | sed 's/:.*//')
        [ -n "$pkg" ] || { bad "$lib ($path): no Debian package holds it here"; continue; }
        if [ "$pkg" = libc6 ] || grep -qx -- "$pkg" "$dir/runtime-packages"; then
            ok "runtime: $lib from $pkg"
        else
            bad "runtime: $lib is in Debian's $pkg, which the final stage does not install"
        fi
    done
fi

[ "$failures" -eq 0 ] || { echo "test-dockerfile: $failures problem(s)" >&2; exit 1; }
echo "test-dockerfile: all checks passed"
