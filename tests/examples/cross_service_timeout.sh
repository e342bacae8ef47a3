#!/bin/sh
# cross_service_timeout.sh EXAMPLE - run the example; check that the budget
# shrinks hop by hop (each below the edge's 300 ms), that hop3 gave up, and
# that the edge got DEADLINE_EXCEEDED in about 300 ms, not after the 700 ms
# the work would take. DCTX_TIME_SCALE widens the slack for sanitizer builds.
set -eu
. "$(dirname "$0")/run_example.sh"
awk -v slack=$((50 * scale)) '
    # "  8.7 ms  hop1  received a budget of 294.9 ms; ..."
    $4 == "received" { budget[$3] = $8 }
    $3 == "hop3" && $4 == "gave" { gave_up = 1 }
    $3 == "edge" && $4 == "got" { status = $5; took = $7 }
    END {
        bad = 0
        if (!(budget["hop1"] > 0 && budget["hop1"] <= 300)) { print "FAIL: hop1 budget " budget["hop1"]; bad = 1 }
        if (!(budget["hop2"] > 0 && budget["hop2"] < budget["hop1"])) { print "FAIL: hop2 budget " budget["hop2"]; bad = 1 }
        if (!(budget["hop3"] > 0 && budget["hop3"] < budget["hop2"])) { print "FAIL: hop3 budget " budget["hop3"]; bad = 1 }
        if (!gave_up) { print "FAIL: hop3 did not give up"; bad = 1 }
        if (status != "DEADLINE_EXCEEDED") { print "FAIL: the edge got " status; bad = 1 }
        if (!(took > 0 && took < 300 + slack)) { print "FAIL: the edge waited " took " ms"; bad = 1 }
        exit bad
    }' "$out"
echo "ok: budgets shrank hop by hop; hop3 gave up; the edge got DEADLINE_EXCEEDED in time"
