#!/bin/sh
# local_tree.sh EXAMPLE - run the example; check that the deadline reached
# all nine workers with its cause, then the hand cancel with its cause.
set -eu
. "$(dirname "$0")/run_example.sh"
deadline=$(grep -c 'saw DEADLINE_EXCEEDED cause DEADLINE_EXCEEDED request budget spent' "$out" || true)
canceled=$(grep -c 'saw CANCELLED *cause CANCELLED *user pressed stop' "$out" || true)
[ "$deadline" = 9 ] || { echo "FAIL: $deadline of 9 workers saw the deadline"; exit 1; }
[ "$canceled" = 9 ] || { echo "FAIL: $canceled of 9 workers saw the cancel"; exit 1; }
echo "ok: the deadline, then the cancel, reached all nine workers with their causes"
