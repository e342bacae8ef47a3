#!/bin/sh
# tracing_values.sh EXAMPLE - run the example; check that every hop shows
# the edge's trace id, a span of its own whose parent is its caller's span,
# and tenant=acme; and that the password is seen at the edge only.
set -eu
. "$(dirname "$0")/run_example.sh"
awk '
    # "  15.7 ms  hop1  trace <id>  span <id>  parent <id>"
    $4 == "trace" { trace[$3] = $5; span[$3] = $7; parent[$3] = $9 }
    # "  15.7 ms  hop1  tenant=acme password=(none)  came with the call: traceparent tenant"
    $4 ~ /^tenant=/ { values[$3] = $0 }
    /hunter2/ && $3 != "edge" { leaked = leaked " " $3 }
    END {
        bad = 0
        if (length(trace["edge"]) != 32) { print "FAIL: no trace at the edge"; bad = 1 }
        caller = "edge"
        for (i = 1; i <= 3; i++) {
            hop = "hop" i
            if (trace[hop] != trace["edge"]) { print "FAIL: " hop " trace " trace[hop]; bad = 1 }
            if (parent[hop] != span[caller]) { print "FAIL: " hop " parent " parent[hop] " is not the span of " caller; bad = 1 }
            if (span[hop] == span[caller] || length(span[hop]) != 16) { print "FAIL: " hop " span " span[hop]; bad = 1 }
            v = values[hop]
            if (v !~ /tenant=acme password=\(none\)/) { print "FAIL: " hop " values: " v; bad = 1 }
            if (v !~ /came with the call:.* tenant/ || v ~ /call:.*password/) { print "FAIL: " hop " received: " v; bad = 1 }
            caller = hop
        }
        if (values["edge"] !~ /password=hunter2/ || values["edge"] ~ /carries:.*password/) { print "FAIL: edge: " values["edge"]; bad = 1 }
        if (leaked != "") { print "FAIL: the password reached" leaked; bad = 1 }
        exit bad
    }' "$out"
echo "ok: one trace, spans chained hop to hop, tenant everywhere, the password only at the edge"
