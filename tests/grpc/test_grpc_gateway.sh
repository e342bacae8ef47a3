#!/bin/bash
# rpcd serve --grpc-listen, called by Python's grpcio (Debian's
# python3-grpcio, run as /usr/bin/python3): a gRPC client's deadline,
# cancel, metadata and status through the gateway into two dctx hops
# (gateway_cases.py), a caller that stops answering (SIGSTOP) dropped by
# the keepalive, health through a drain, and churn (churn.py).
# Usage: test_grpc_gateway.sh RPCD. 77: python3-grpcio is missing.
rpcd=$1
test_name=grpc-gateway
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
$py -c 'import grpc' 2>/dev/null || { echo "skip: /usr/bin/python3 has no grpc (python3-grpcio)"; exit 77; }
source "$here/../rpcd/lib.sh"

pb=$(free_port)
pa=$(free_port)
pg=$(free_port)
serve b --listen "tcp://127.0.0.1:$pb"
# a has a worker for each call the churn keeps in flight (64): the churn
# tests the gateway, not a's queue (4 workers, 5 s Sleeps timing out in it).
serve a --listen "tcp://127.0.0.1:$pa" --next "tcp://127.0.0.1:$pb" --workers 80 \
    --grpc-listen "127.0.0.1:$pg" --grpc-forward x-custom --grpc-forward x-blob-bin
check "a logs where it takes gRPC" wait_line "$dir/a.log" "\"event\":\"grpc_listening\".*\"port\":$pg"

# The flags' errors: usage errors (64) before anything starts; a gRPC
# port in use refused, not shared.
refused() { # expected exit, expected stderr text, then rpcd serve's arguments
    local want=$1 text=$2
    shift 2
    timeout 10 "$rpcd" serve --listen "tcp://127.0.0.1:$(free_port)" "$@" >/dev/null 2>"$dir/err"
    local rc=$?
    [ "$rc" -eq "$want" ] && grep -q -- "$text" "$dir/err"
}
check "--grpc-forward with an uppercase key: usage error" \
    refused 64 "lowercase metadata key" --grpc-listen "127.0.0.1:$(free_port)" --grpc-forward X-Up
check "--grpc-forward without --grpc-listen: usage error" \
    refused 64 "needs --grpc-listen" --grpc-forward x-k
check "--grpc-max-streams 0: usage error" \
    refused 64 "takes 1..65536" --grpc-listen "127.0.0.1:$(free_port)" --grpc-max-streams 0
check "--grpc-max-streams without --grpc-listen: usage error" \
    refused 64 "needs --grpc-listen" --grpc-max-streams 4
check "--grpc-listen on a port in use: refused" \
    refused 14 "cannot listen for gRPC on 127.0.0.1:$pg" --grpc-listen "127.0.0.1:$pg"

timeout 120 $py "$here/gateway_cases.py" "127.0.0.1:$pg" "$dir"
cases=$?
[ "$cases" -eq 0 ] || fail "gateway_cases.py: $cases failures"

# --grpc-max-streams 1: a second stream while the first lasts is refused
# RESOURCE_EXHAUSTED; unary calls still go.
pm=$(free_port)
serve m --listen "tcp://127.0.0.1:$(free_port)" --grpc-listen "127.0.0.1:$pm" --grpc-max-streams 1
check "--grpc-max-streams 1: the second stream refused, the first whole, a unary call served" \
    $py - "127.0.0.1:$pm" <<'PY'
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
count = ch.unary_stream("/dctx.demo.Demo/Count")
first = count(b"3 300ms", timeout=10)
assert next(first) == b"1"
try:
    list(count(b"3 1ms", timeout=5))
    sys.exit("the second stream went")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.code()
assert list(first) == [b"2", b"3"]
assert ch.unary_unary("/dctx.demo.Demo/Echo")(b"x", timeout=5) == b"x"
PY

# A gRPC caller that stops answering mid-call (SIGSTOP: its kernel still
# takes the bytes, the process answers no ping): with --keepalive 200ms the
# gateway's pings go unanswered, the C core drops the connection, and the
# call it carried is canceled through to the handler; with the default
# keepalive (10 s) the call is still running after a second.
stopped_caller() { # address: a caller starting a 30 s Sleep there (the test stops it)
    $py - "$1" >/dev/null 2>&1 <<'PY' &
import sys, time, grpc
ch = grpc.insecure_channel(sys.argv[1])
f = ch.unary_unary("/dctx.demo.Demo/Sleep").future(b"30s", timeout=60)
time.sleep(60)
PY
    caller=$!
}
for name in k k0; do
    port=$(free_port)
    if [ $name = k ]; then
        serve $name --listen "tcp://127.0.0.1:$(free_port)" --grpc-listen "127.0.0.1:$port" \
            --keepalive 200ms --keepalive-timeout 200ms
    else
        serve $name --listen "tcp://127.0.0.1:$(free_port)" --grpc-listen "127.0.0.1:$port"
    fi
    stopped_caller "127.0.0.1:$port"
    check "$name: the caller's Sleep started" \
        wait_line "$dir/$name.log" '"event":"call_start","method":"/dctx.demo.Demo/Sleep"'
    kill -STOP "$caller"
    if [ $name = k ]; then
        check "k: the stopped caller's call ends CANCELLED at the gateway" wait_line "$dir/k.log" \
            '"event":"grpc_call_end","method":"/dctx.demo.Demo/Sleep".*"status":"CANCELLED"'
        check "k: its handler was stopped" wait_line "$dir/k.log" \
            '"event":"call_end","method":"/dctx.demo.Demo/Sleep","status":"CANCELLED"'
    else
        sleep 1
        check "k0: without a short keepalive the call still runs" \
            bash -c "! grep -q '\"event\":\"call_end\"' '$dir/k0.log'"
    fi
    kill -KILL "$caller"
    wait "$caller" 2>/dev/null
done

# Churn: every call ends once, nothing stays in flight, memory stays put.
timeout 600 $py "$here/churn.py" "127.0.0.1:$pg" "${GRPC_CHURN_CALLS:-20000}" "$rpcd" \
    "tcp://127.0.0.1:$pa" "${pids[1]}"
churn=$?
[ "$churn" -eq 0 ] || fail "churn.py: $churn failures"

# Health through a drain: SERVING, then NOT_SERVING while a call holds the
# instance up, then the port closes.
pc=$(free_port)
pgc=$(free_port)
serve c --listen "tcp://127.0.0.1:$pc" --grpc-listen "127.0.0.1:$pgc" --shutdown-grace 5s
health() {
    $py - "127.0.0.1:$pgc" <<'PY'
import sys, grpc
try:
    r = grpc.insecure_channel(sys.argv[1]).unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=1)
    print({b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(r, repr(r)))
except grpc.RpcError as e:
    print(e.code().name)
PY
}
check "health: SERVING while c runs" test "$(health)" = SERVING
# Watch, as gRPC clients' own health checking does: SERVING at once, then
# NOT_SERVING when the drain begins, until the instance stops; a service
# the gateway does not know: SERVICE_UNKNOWN once, the stream left open.
$py "$here/health_watch.py" "127.0.0.1:$pgc" >"$dir/watch.out" 2>&1 &
watcher=$!
$py "$here/health_watch.py" "127.0.0.1:$pgc" other.Service 1 >"$dir/watch_other.out" 2>&1 &
watcher_other=$!
check "health watch: SERVING at once" wait_line "$dir/watch.out" '^SERVING$'
call "tcp://127.0.0.1:$pc" /dctx.demo.Demo/Sleep --data 1500ms >/dev/null &
sleeper=$!
wait_line "$dir/c.log" '"event":"call_start".*Sleep' || fail "the Sleep call did not start"
kill -TERM "${pids[-1]}"
wait_line "$dir/c.log" '"event":"shutdown"' || fail "c did not begin to drain"
seen=""
for _ in $(seq 20); do
    seen=$(health)
    [ "$seen" = NOT_SERVING ] && break
    sleep 0.05
done
check "health: NOT_SERVING while c drains (saw $seen)" test "$seen" = NOT_SERVING
check "health watch: NOT_SERVING sent when the drain began" \
    wait_line "$dir/watch.out" '^NOT_SERVING$'
wait "$sleeper"
check "the call that held the drain finished OK" test $? -eq 0
wait "${pids[-1]}"
unset 'pids[-1]'
check "health: nothing answers once c stopped" test "$(health)" = UNAVAILABLE
wait "$watcher" "$watcher_other"
check "health watch: SERVING, NOT_SERVING, then the stream ended with the instance ($(tr '\n' ' ' <"$dir/watch.out"))" \
    $py -c 'import sys; l = open(sys.argv[1]).read().split("\n")[:3]
sys.exit(not (l[:2] == ["SERVING", "NOT_SERVING"] and l[2] in ("end UNAVAILABLE", "end CANCELLED")))' \
    "$dir/watch.out"
check "health watch of another service: SERVICE_UNKNOWN, the stream kept open till the client's 1 s ($(tr '\n' ' ' <"$dir/watch_other.out"))" \
    test "$(tr '\n' ' ' <"$dir/watch_other.out")" = "SERVICE_UNKNOWN end DEADLINE_EXCEEDED "

# Streams in flight when the instance stops: one read, a client stream
# never half-closed, one never read. The instance stops within its grace
# (plus its own work), each stream ends at the caller, nothing is left.
pd=$(free_port)
pgd=$(free_port)
serve d --listen "tcp://127.0.0.1:$pd" --grpc-listen "127.0.0.1:$pgd" --shutdown-grace 1s
$py "$here/streams_at_exit.py" "127.0.0.1:$pgd" >"$dir/streams.out" 2>&1 &
streams=$!
wait_line "$dir/streams.out" '^ready' || fail "the streams did not start"
kill -TERM "${pids[-1]}"
stopped=1
for _ in $(seq 200); do # 10 s: the grace is 1 s
    kill -0 "${pids[-1]}" 2>/dev/null || { stopped=0; break; }
    sleep 0.05
done
check "d stops with three streams in flight" test "$stopped" -eq 0
wait "${pids[-1]}"
check "... and exits 0 (no leak under a sanitizer)" test $? -eq 0
unset 'pids[-1]'
wait "$streams"
check "each stream a caller waited on ended UNAVAILABLE at the caller: $(tail -1 "$dir/streams.out")" \
    $py -c 'import json, sys; r = json.loads(open(sys.argv[1]).read().split("\n")[-2])
sys.exit(not (r["count"][0] == "UNAVAILABLE" and r["count"][1] > 0 and r["sum"][0] == "UNAVAILABLE"))' \
    "$dir/streams.out"
check "d's log: the gateway ended the three calls, each stream begun ended, d stopped clean" \
    $py -c 'import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
count = lambda e: sum(1 for l in lines if l["event"] == e)
stopped = [l.get("message") for l in lines if l["event"] == "stopped"]
print("  grpc_call_end %d, stream_start %d, stream_end %d, stopped %s"
      % (count("grpc_call_end"), count("stream_start"), count("stream_end"), stopped))
sys.exit(not (count("grpc_call_end") == 3 and count("stream_start") == count("stream_end") >= 2
              and stopped == ["clean"]))' \
    "$dir/d.log"

stop_servers
check "a's log: every gRPC call line is valid JSON" $py -c '
import json, sys
for line in open(sys.argv[1]): json.loads(line)' "$dir/a.log"
echo "$failures failures"
[ "$failures" -eq 0 ]
