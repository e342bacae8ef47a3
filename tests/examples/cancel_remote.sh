#!/bin/sh
# cancel_remote.sh EXAMPLE - run the example; check that each of the three
# workers stopped with the client's cause within a few ms of the client's
# cancel (not after its 10 s of work), that the fan saw the same cause, and
# that the cancels at the fan and at each worker "stopped" a running handler.
# DCTX_TIME_SCALE widens the slack for sanitizer builds.
set -eu
. "$(dirname "$0")/run_example.sh"
awk -v slack=$((100 * scale)) '
    # "  212.9 ms  client  cancels: ..."
    $3 == "client" && $4 == "cancels:" { canceled = $1 }
    $3 == "client" && /its call ended: CANCELLED/ { ended = 1 }
    $3 == "client" && /its cancel at the fan: stopped/ { client_outcome = 1 }
    $3 == "fan" && /its context was canceled: CANCELLED "user pressed stop"/ { fan_saw = 1 }
    $3 == "fan" && /its cancel at worker[0-9]: stopped/ { fan_outcomes++ }
    $3 ~ /^worker/ && /stopped after .* CANCELLED "user pressed stop"/ { stopped[$3] = $1 }
    END {
        bad = 0
        if (canceled == "") { print "FAIL: the client did not cancel"; bad = 1 }
        if (!ended) { print "FAIL: the call of the client did not end CANCELLED"; bad = 1 }
        if (!client_outcome) { print "FAIL: the cancel of the client did not stop the fan"; bad = 1 }
        if (!fan_saw) { print "FAIL: the fan did not see the cause of the client"; bad = 1 }
        if (fan_outcomes != 3) { print "FAIL: the cancels of the fan stopped " fan_outcomes " workers"; bad = 1 }
        for (i = 1; i <= 3; i++) {
            w = "worker" i
            if (!(w in stopped)) { print "FAIL: " w " did not stop with the cause of the client"; bad = 1 }
            else if (stopped[w] - canceled > slack) { print "FAIL: " w " stopped " stopped[w] - canceled " ms after the cancel"; bad = 1 }
        }
        exit bad
    }' "$out"
echo "ok: every hop stopped with the client's cause within milliseconds"
