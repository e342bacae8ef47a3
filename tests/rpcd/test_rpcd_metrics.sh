#!/usr/bin/env bash
# test_rpcd_metrics.sh RPCD - `rpcd serve --metrics-listen`: /metrics holds
# what the calls made (by method and status, latency, next hops), passes
# Debian's `promtool check metrics`, and a real Prometheus server scrapes it
# and answers a query with the calls; /healthz says 200 while serving and
# 503 while draining. Exits 77 when prometheus or promtool is missing.
set -u
rpcd=$1
test_name=rpcd-metrics
command -v prometheus >/dev/null && command -v promtool >/dev/null || {
    echo "skip: prometheus and promtool are needed (Debian package prometheus)"
    exit 77
}
. "$(dirname "$0")/lib.sh"

# metric NAME{LABELS}: its value in $dir/metrics.txt (empty when absent).
metric() { awk -v k="$1" '$1 == k { print $2 }' "$dir/metrics.txt"; }

a="ipc://$dir/a.ipc"
b="ipc://$dir/b.ipc"
"$rpcd" serve --listen "$b" --name b --log "$dir/b.log" &
pids+=($!)
"$rpcd" serve --listen "$a" --name a --next "$b" --log "$dir/a.log" --shutdown-grace 10s \
    --metrics-listen 127.0.0.1:0 &
apid=$!
pids+=($apid)
wait_line "$dir/a.log" '"event":"serving"' || fail "a did not start"
wait_line "$dir/b.log" '"event":"serving"' || fail "b did not start"
hostport=$(grep -o '"metrics":"[^"]*"' "$dir/a.log" | head -n 1 | cut -d'"' -f4)
check "the serving line names the metrics address with its port ($hostport)" \
    grep -Eq '^127\.0\.0\.1:[1-9][0-9]*$' <<<"$hostport"
base="http://$hostport"

for _ in 1 2 3 4 5; do call "$a" /dctx.demo.Demo/Echo --data hi >/dev/null; done
call "$a" /dctx.demo.Demo/Fail --data NOT_FOUND >/dev/null
call "$a" /no.Such/Method >/dev/null
call "$a" /dctx.demo.Demo/Chain --data 1ms >/dev/null
call "$a" /dctx.demo.Demo/Sleep --data 10s --timeout 50ms >/dev/null
call "$a" /dctx.demo.Demo/Sleep --data 150ms >/dev/null # at least 150 ms in the handler

http "$base/metrics" >"$dir/resp.txt"
check "GET /metrics answers 200" test "$(head -n 1 "$dir/resp.txt")" = 200
tail -n +2 "$dir/resp.txt" >"$dir/metrics.txt"
check "promtool check metrics finds nothing to say" promtool check metrics <"$dir/metrics.txt"
check "5 Echo calls OK" test "$(metric 'dctx_server_calls_total{method="/dctx.demo.Demo/Echo",code="OK"}')" = 5
check "1 Fail call NOT_FOUND" test "$(metric 'dctx_server_calls_total{method="/dctx.demo.Demo/Fail",code="NOT_FOUND"}')" = 1
check "an unknown method under method=\"unknown\"" \
    test "$(metric 'dctx_server_calls_total{method="unknown",code="UNIMPLEMENTED"}')" = 1
check "no series for the unknown name itself" bash -c "! grep -q no.Such '$dir/metrics.txt'"
check "the Sleep that timed out: DEADLINE_EXCEEDED" \
    test "$(metric 'dctx_server_calls_total{method="/dctx.demo.Demo/Sleep",code="DEADLINE_EXCEEDED"}')" = 1
check "Echo's histogram counts its 5 calls" \
    test "$(metric 'dctx_server_call_duration_seconds_count{method="/dctx.demo.Demo/Echo"}')" = 5
check "Echo's +Inf bucket equals its count" \
    test "$(metric 'dctx_server_call_duration_seconds_bucket{method="/dctx.demo.Demo/Echo",le="+Inf"}')" = 5
check "the 150 ms Sleep is counted above the 0.1 s bucket: le=0.1 holds at most the other" \
    test "$(metric 'dctx_server_call_duration_seconds_bucket{method="/dctx.demo.Demo/Sleep",le="0.1"}')" -le 1 -a \
    "$(metric 'dctx_server_call_duration_seconds_bucket{method="/dctx.demo.Demo/Sleep",le="+Inf"}')" = 2
check "... and its sum is at least 0.15 s" \
    python3 -c "import sys; sys.exit(not float(sys.argv[1]) >= 0.15)" \
    "$(metric 'dctx_server_call_duration_seconds_sum{method="/dctx.demo.Demo/Sleep"}')"
check "calls received: 10" test "$(metric dctx_server_calls_received_total)" = 10
check "nothing in flight" test "$(metric dctx_server_calls_in_flight)" = 0
check "the next hop is up" test "$(metric "dctx_next_up{next=\"$b\"}")" = 1
check "the Chain's onward call counted for the next hop" \
    test "$(metric "dctx_next_calls_total{next=\"$b\",code=\"OK\"}")" = 1
check "not draining" test "$(metric dctx_server_draining)" = 0
check "GET /healthz: 200 serving" test "$(http "$base/healthz" | tr '\n' ' ')" = "200 serving "
check "an unknown path: 404" test "$(http "$base/nothing" | head -n 1)" = 404

# A real Prometheus scrapes rpcd every 200 ms; its HTTP API must find the
# Echo calls.
pport=$(free_port)
cat >"$dir/prometheus.yml" <<YML
global:
  scrape_interval: 200ms
scrape_configs:
  - job_name: rpcd
    static_configs:
      - targets: ['$hostport']
YML
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
    --web.listen-address="127.0.0.1:$pport" --log.level=warn >"$dir/prometheus.log" 2>&1 &
ppid_=$!
pids+=($ppid_)
query="http://127.0.0.1:$pport/api/v1/query?query=dctx_server_calls_total%7Bmethod%3D%22%2Fdctx.demo.Demo%2FEcho%22%2Ccode%3D%22OK%22%7D"
found=""
for _ in $(seq 150); do # 30 s at most
    found=$(http "$query" | tail -n +2 | python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)["data"]["result"]
    print(r[0]["value"][1] if r else "")
except Exception:
    print("")' 2>/dev/null)
    [ -n "$found" ] && break
    sleep 0.2
done
check "Prometheus scraped rpcd: its query finds the 5 Echo calls (found \"$found\")" test "$found" = 5
if [ "$found" != 5 ]; then tail -n 20 "$dir/prometheus.log"; fi
up=$(http "http://127.0.0.1:$pport/api/v1/query?query=up" | tail -n +2 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])' 2>/dev/null)
check "Prometheus sees the target up" test "$up" = 1
kill -TERM "$ppid_"
wait "$ppid_" 2>/dev/null

# The drain: a call in flight holds it (4 s: room for the checks on a
# loaded machine); /healthz answers 503 through it.
sleeps() { grep -c '"event":"call_start","method":"/dctx.demo.Demo/Sleep"' "$dir/a.log"; }
before=$(sleeps)
call "$a" /dctx.demo.Demo/Sleep --data 4s >"$dir/sleep.out" &
sleeper=$!
for _ in $(seq 100); do [ "$(sleeps)" -gt "$before" ] && break; sleep 0.05; done
check "the Sleep call started" test "$(sleeps)" -gt "$before"
kill -TERM "$apid"
status=""
for _ in $(seq 50); do # 5 s at most
    status=$(http "$base/healthz" | tr '\n' ' ')
    [ "$status" = "503 draining " ] && break
    sleep 0.1
done
check "GET /healthz while draining: 503 draining (got \"$status\")" test "$status" = "503 draining "
http "$base/metrics" | tail -n +2 >"$dir/metrics.txt"
check "dctx_server_draining is 1 while draining" test "$(metric dctx_server_draining)" = 1
check "the call in flight is seen while draining" test "$(metric dctx_server_calls_in_flight)" = 1
wait "$sleeper"
check "the call in flight finished OK through the drain" grep -q OK "$dir/sleep.out"
wait "$apid"
check "rpcd stopped cleanly after the drain" test $? = 0
check "the metrics port is closed after exit" test "$(http "$base/healthz" | head -n 1)" = 000

# Bad flags: a usage error, or a clear error when the port is taken.
"$rpcd" serve --listen "ipc://$dir/c.ipc" --metrics-listen nonsense >/dev/null 2>"$dir/err.txt"
check "--metrics-listen nonsense: exit 64" test $? = 64
check "... and says what it takes" grep -q "HOST:PORT" "$dir/err.txt"
# A port held by another listener (it prints the port, then holds it 10 s).
python3 -u -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()
print(s.getsockname()[1]); time.sleep(10)" >"$dir/taken" &
holder=$!
for _ in $(seq 50); do [ -s "$dir/taken" ] && break; sleep 0.1; done
taken=$(cat "$dir/taken")
timeout 10 "$rpcd" serve --listen "ipc://$dir/d.ipc" --metrics-listen "127.0.0.1:$taken" \
    --log "$dir/d.log" >/dev/null 2>"$dir/err.txt"
rc=$?
check "--metrics-listen on a port in use: fails at start (exit $rc)" test "$rc" -ne 0 -a "$rc" -ne 124
check "... naming the address" grep -q "cannot serve metrics on 127.0.0.1:$taken" "$dir/err.txt"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

[ "$failures" -eq 0 ] && echo "all metrics checks passed"
exit $((failures > 0))
