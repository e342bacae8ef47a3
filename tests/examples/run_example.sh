# run_example.sh - sourced by the example checks: run the example ($1) into
# $out, show its output, and fail at once if it did not exit 0. The caller
# then checks in $out what the example promises. $scale is DCTX_TIME_SCALE.
scale=${DCTX_TIME_SCALE:-1}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
"$1" >"$out" || rc=$?
[ $rc = 0 ] || { cat "$out"; echo "FAIL: the example exited $rc"; exit 1; }
cat "$out"
