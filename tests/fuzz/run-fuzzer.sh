#!/bin/sh
# run-fuzzer.sh FUZZER CORPUS SECONDS - run one libFuzzer harness for
# SECONDS from the seeds in CORPUS (read only: what it finds goes to a
# scratch directory). Every seed runs first, so a file added to the corpus
# after a crash is a regression test. A crash, a leak, a failed invariant
# or a timeout (10 s for one input) fails; the input that did it is kept
# in the build folder (crash-*, leak-*, timeout-*) and named.
set -eu
fuzzer=$1 corpus=$2 seconds=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts=$(dirname "$fuzzer")/artifacts/
mkdir -p "$artifacts"
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts" "$work" "$corpus"
