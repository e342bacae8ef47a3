#!/usr/bin/env bash
# test_rpcd_cli.sh RPCD - rpcd's fixed command line, as other tools drive it:
# `rpcd call` output and exit codes, clear errors for bad input, the demo
# methods, Stats, the JSON logs, `rpcd bench`'s JSON, `rpcd trace`, and a
# graceful SIGTERM. Every step is bounded in time.
set -uo pipefail
rpcd=${1:?usage: test_rpcd_cli.sh path/to/rpcd}
test_name=cli
# shellcheck source=tests/rpcd/lib.sh
. "$(dirname "$0")/lib.sh"
url() { echo "ipc://$dir/$1.ipc"; }

serve() { # name [next...]
    local name=$1 args=(serve --listen "$(url "$1")" --name "$1" --log "$dir/$1.log"
        --shutdown-grace 500ms)
    shift
    for n in "$@"; do args+=(--next "$(url "$n")"); done
    "$rpcd" "${args[@]}" &
    pids+=($!)
    for _ in $(seq 100); do
        call "$(url "$name")" /dctx.Admin/Stats --timeout 200ms >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "rpcd $name did not come up"
}

serve C
serve B C

# --- version and help
check "--version names the version" bash -c "'$rpcd' --version | grep -q '^rpcd [0-9]'"
for sub in "" serve call bench trace keygen; do
    check "rpcd $sub --help exits 0 with usage" bash -c "'$rpcd' $sub --help | grep -q usage"
done

# --- call: first line status, then payload, exit code = status
out=$(call "$(url C)" /dctx.demo.Demo/Echo --data hello --value tenant=acme --value a=1); rc=$?
check "Echo is OK, exit 0" test $rc -eq 0
check "Echo prints OK, the data, then sorted key=value lines" \
    test "$out" = "$(printf 'OK\nhello\na=1\ntenant=acme')"
out=$(call "$(url C)" /dctx.demo.Demo/Fail --data "NOT_FOUND no such user"); rc=$?
check "Fail answers its code (exit 5)" test $rc -eq 5
check "Fail prints NOT_FOUND and the message" test "$out" = "$(printf 'NOT_FOUND\nno such user')"
out=$(call "$(url C)" /nope.Nope/Nope); rc=$?
check "an unknown method is UNIMPLEMENTED (exit 12)" test $rc -eq 12
check "... and says so" bash -c "grep -q '^UNIMPLEMENTED' <<<'$out'"

# --- Sleep and deadlines
start=$(date +%s%N)
out=$(call "$(url C)" /dctx.demo.Demo/Sleep --data 5s --timeout 200ms); rc=$?
took=$(( ($(date +%s%N) - start) / 1000000 ))
check "Sleep past its deadline is DEADLINE_EXCEEDED (exit 4)" test $rc -eq 4
check "... after about 200 ms, not 5 s (took $took ms)" test $took -ge 200 -a $took -lt 3000
out=$(call "$(url C)" /dctx.demo.Demo/Sleep --data 10ms); rc=$?
check "a short Sleep is OK" test $rc -eq 0
out=$(call "$(url C)" /dctx.demo.Demo/Sleep --data forever); rc=$?
check "Sleep with bad data is INVALID_ARGUMENT (exit 3)" test $rc -eq 3

# --- cancel-after: cascade and outcome
out=$(call "$(url B)" /dctx.demo.Demo/Chain --data 10s --cancel-after 200ms --log "$dir/edge.log"); rc=$?
check "a canceled call is CANCELLED (exit 1)" test $rc -eq 1
check "... and says what the cancel did at the far end" bash -c "grep -qx 'cancel: stopped' <<<'$out'"
check "... the edge logged cancel_sent with ts" grep -q '"event":"cancel_sent"' "$dir/edge.log"
check "... C, two hops down, saw the cancel" \
    bash -c "for i in \$(seq 50); do grep -q '\"cancel_received\"' '$dir/C.log' && exit 0; sleep 0.1; done; exit 1"

out=$(call "$(url B)" /dctx.demo.Demo/Chain --data 10s --trace --value tenant=acme \
    --cancel-after 200ms); rc=$?
check "--cancel-after cancels a traced call with values too: CANCELLED, stopped" \
    test "$rc $(grep -c '^cancel: stopped$' <<<"$out")" = "1 1"

# --- Chain through B to C, with a trace
out=$(call "$(url B)" /dctx.demo.Demo/Chain --data 10ms --trace --log "$dir/edge.log"); rc=$?
check "Chain through B answers with C's name first" bash -c "sed -n 2p <<<'$out' | grep -qx C"
trace=$(sed -n 's/^trace: //p' <<<"$out")
check "--trace prints the trace id" test ${#trace} -eq 32
check "B logged call_end with that trace id" wait_line "$dir/B.log" "\"trace_id\":\"$trace\""
check "... and C too" wait_line "$dir/C.log" "\"trace_id\":\"$trace\""
check "call_end lines carry ts, method, status, elapsed_us" \
    bash -c "grep '\"event\":\"call_end\"' '$dir/C.log' | grep -v Admin | head -1 | grep -q '\"ts\":[0-9]*,.*\"method\":\"/dctx.demo.Demo/.*\"status\":\"[A-Z_]*\",\"elapsed_us\":[0-9]'"
wf=$("$rpcd" trace "$dir/edge.log" "$dir/B.log" "$dir/C.log" --trace-id "$trace")
check "rpcd trace draws the three spans, nested" \
    bash -c "grep -q '^trace $trace: 3 spans' <<<'$wf' && grep -q '^    C ' <<<'$wf'"

# --- Stats
stats=$(call "$(url C)" /dctx.Admin/Stats | tail -n +2)
for key in calls in_flight cancels_received cancels_pushed peers_lost bad_frames uptime_s; do
    check "Stats has \"$key\"" bash -c "grep -q '\"$key\":' <<<'$stats'"
done
check "C's Stats lists no next hop" bash -c "grep -q '\"next\":\[\]}' <<<'$stats'"
stats=$(call "$(url B)" /dctx.Admin/Stats | tail -n +2)
check "B's Stats says its next hop C is connected and has answered" \
    bash -c "grep -q '\"next\":\[{\"url\":\"$(url C)\",\"connected\":true,\"calls\":[1-9][0-9]*,\"ok\":[1-9]' <<<'$stats'"
serve D nobody # its next hop never comes up
stats=$(call "$(url D)" /dctx.Admin/Stats | tail -n +2)
check "D's Stats says its next hop is not connected" \
    bash -c "grep -q '\"next\":\[{\"url\":\"$(url nobody)\",\"connected\":false,' <<<'$stats'"

# --- bench
json=$(timeout 60 "$rpcd" bench "$(url C)" /dctx.demo.Demo/Echo --concurrency 8 --calls 2000 2>/dev/null)
for key in calls calls_per_s p50_us p90_us p99_us max_us by_status; do
    check "bench JSON has \"$key\"" bash -c "grep -q '\"$key\":' <<<'$json'"
done
check "bench made exactly 2000 OK calls" bash -c "grep -q '\"calls\":2000,' <<<'$json' && grep -q '\"OK\":2000' <<<'$json'"
json=$(timeout 60 "$rpcd" bench "$(url C)" /dctx.demo.Demo/Sleep --data 20ms --concurrency 16 --calls 400 --cancel-fraction 0.5 2>/dev/null)
check "bench --cancel-fraction cancels some calls" bash -c "grep -q '\"CANCELLED\":[1-9]' <<<'$json'"

# --- keygen: a secret key file its owner's alone, a public key line to paste
pub=$("$rpcd" keygen "$dir/id.key"); rc=$?
check "keygen exits 0 and prints one dctx-ed25519: line of 43 base64 characters" \
    bash -c "test $rc -eq 0 && grep -Eqx 'dctx-ed25519:[A-Za-z0-9_-]{43}' <<<'$pub'"
check "... its key file has mode 600" test "$(stat -c %a "$dir/id.key")" = 600
check "... and names the public key it printed" grep -qF "$pub" "$dir/id.key"
"$rpcd" keygen "$dir/id.key" >/dev/null 2>"$dir/err"; rc=$?
check "keygen never overwrites a key file (exit $rc, ALREADY_EXISTS)" \
    bash -c "test $rc -eq 6 && grep -q 'exists' '$dir/err'"
"$rpcd" keygen >/dev/null 2>&1; rc=$?
check "keygen without FILE is a usage error (exit 64)" test $rc -eq 64

# --- bad input: clear message and exit code
call "not a url" /a/b >/dev/null 2>"$dir/err"; rc=$?
check "a bad URL is INVALID_ARGUMENT (exit 3) with a message" bash -c "test $rc -eq 3 && grep -q 'bad URL' '$dir/err'"
call "$(url nobody)" /dctx.demo.Demo/Echo >/dev/null 2>&1; rc=$?
check "an unreachable server is UNAVAILABLE (exit 14)" test $rc -eq 14
call "$(url C)" /dctx.demo.Demo/Echo --timeout soon >/dev/null 2>"$dir/err"; rc=$?
check "a bad duration is a usage error (exit 64) with a message" bash -c "test $rc -eq 64 && grep -q 'duration' '$dir/err'"
for bad in $'\v-3s' ' 5s' '0x10s' '1e3ms' 'infs' '-0s' '.s'; do
    call "$(url C)" /dctx.demo.Demo/Echo --timeout "$bad" >/dev/null 2>&1; rc=$?
    check "--timeout '$bad' is a usage error (exit 64; fuzz_duration found a space then a minus)" \
        test $rc -eq 64
done
"$rpcd" serve --nonsense >/dev/null 2>&1; rc=$?
check "an unknown flag is a usage error (exit 64)" test $rc -eq 64

# --- call loops: a server that is its own next hop refuses the call that came back, at
# once, with 4 workers and no deadline (no worker waits on itself)
serve L L
start=$(date +%s%N)
out=$(call "$(url L)" /dctx.demo.Demo/Chain --data 1ms); rc=$?
took=$(( ($(date +%s%N) - start) / 1000000 ))
check "a Chain round a loop fails FAILED_PRECONDITION (exit 9)" test $rc -eq 9
check "... naming the server the loop went through" grep -q "call loop through L" <<<"$out"
check "... at once, not at a deadline (took $took ms)" test $took -lt 5000

# --- keepalive: a server that stops answering (SIGSTOP) fails a call that has no
# deadline, and a caller that stops is lost to the server; bad values are usage errors
out=$(call "$(url C)" /dctx.demo.Demo/Echo --keepalive 10s --keepalive-timeout 5s); rc=$?
check "--keepalive and --keepalive-timeout take durations" test $rc -eq 0
out=$(call "$(url C)" /dctx.demo.Demo/Echo --keepalive 0); rc=$?
check "--keepalive 0 turns it off" test $rc -eq 0
out=$(call "$(url C)" /dctx.demo.Demo/Echo --keepalive soon 2>&1); rc=$?
check "--keepalive with a bad value is a usage error (exit 64)" test $rc -eq 64
out=$("$rpcd" serve --listen "$(url K)" --keepalive-timeout 0 2>&1); rc=$?
check "serve --keepalive-timeout 0 is a usage error (exit 64)" test $rc -eq 64
"$rpcd" serve --listen "$(url S)" --name S --keepalive 100ms --keepalive-timeout 100ms \
    --log "$dir/S.log" &
stopped=$!
pids+=("$stopped")
for _ in $(seq 100); do call "$(url S)" /dctx.Admin/Stats --timeout 200ms >/dev/null 2>&1 && break; sleep 0.05; done
call "$(url S)" /dctx.demo.Demo/Sleep --data 30s --keepalive 100ms --keepalive-timeout 100ms \
    >"$dir/stopped.out" 2>&1 &
caller=$!
sleep 0.3
kill -STOP "$stopped"
start=$(date +%s%N)
wait "$caller"; rc=$?
took=$(( ($(date +%s%N) - start) / 1000000 ))
kill -CONT "$stopped"
check "a call to a stopped server with no deadline fails UNAVAILABLE (exit 14)" test $rc -eq 14
check "... saying the server stopped answering" grep -q "stopped answering" "$dir/stopped.out"
check "... within the keepalive's bound, not 30 s (took $took ms)" test $took -lt 10000
"$rpcd" call "$(url S)" /dctx.demo.Demo/Sleep --data 30s --keepalive 0 >/dev/null 2>&1 &
quiet=$!
sleep 0.3
kill -STOP "$quiet"
check "a caller that stops is lost to the server: its call is canceled" \
    wait_line "$dir/S.log" "caller lost"
kill -KILL "$quiet"; kill -CONT "$quiet" 2>/dev/null; wait "$quiet" 2>/dev/null

# --- the log: --log-calls chooses the calls logged (cancels always are); a log
# nobody reads never slows the calls: its lines are dropped and counted
start_logged() { # name, then rpcd serve's flags after --listen and --name
    local name=$1
    shift
    "$rpcd" serve --listen "$(url "$name")" --name "$name" "$@" &
    pids+=($!)
    for _ in $(seq 100); do
        call "$(url "$name")" /dctx.demo.Demo/Echo --timeout 200ms >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "rpcd $name did not come up"
}
start_logged LE --log "$dir/LE.log" --log-calls errors
call "$(url LE)" /dctx.demo.Demo/Echo --data fine >/dev/null
call "$(url LE)" /dctx.demo.Demo/Fail --data "NOT_FOUND gone" >/dev/null
call "$(url LE)" /dctx.demo.Demo/Sleep --data 10s --cancel-after 100ms >/dev/null
check "--log-calls errors: a failed call's call_end is logged" \
    wait_line "$dir/LE.log" '"event":"call_end".*"status":"NOT_FOUND"'
check "... the cancel too" wait_line "$dir/LE.log" '"event":"cancel_received"'
check "... and no line for the calls that were OK" \
    bash -c "! grep '\"event\":\"call_' '$dir/LE.log' | grep -q '\"status\":\"OK\"\|call_start'"
start_logged LN --log "$dir/LN.log" --log-calls none
call "$(url LN)" /dctx.demo.Demo/Fail --data "NOT_FOUND gone" >/dev/null
call "$(url LN)" /dctx.demo.Demo/Sleep --data 10s --cancel-after 100ms >/dev/null
check "--log-calls none: the cancel is logged" wait_line "$dir/LN.log" '"event":"cancel_received"'
check "... and no call line at all" bash -c "! grep -q '\"event\":\"call_' '$dir/LN.log'"
out=$("$rpcd" serve --listen "$(url LX)" --log-calls some 2>&1); rc=$?
check "--log-calls with another value is a usage error (exit 64)" test $rc -eq 64
mkfifo "$dir/unread.fifo"
exec 7<>"$dir/unread.fifo" # held open, never read: the pipe fills, the writer blocks
start_logged LF --log "$dir/unread.fifo"
start=$(date +%s%N)
timeout 60 "$rpcd" bench "$(url LF)" /dctx.demo.Demo/Echo --concurrency 8 --calls 40000 \
    >"$dir/unread-bench.json" 2>/dev/null; rc=$?
took=$(( ($(date +%s%N) - start) / 1000000 ))
check "a log nobody reads: 40,000 calls still go through (took $took ms)" \
    grep -q '"by_status":{"OK":40000}' "$dir/unread-bench.json"
dropped=$(call "$(url LF)" /dctx.Admin/Stats | grep -o '"log_lines_dropped":[0-9]*' | cut -d: -f2)
check "... the lines that did not fit are dropped and counted (Stats: ${dropped:-none})" \
    test "${dropped:-0}" -gt 0
kill -TERM "${pids[-1]}"
start=$(date +%s%N)
for _ in $(seq 100); do kill -0 "${pids[-1]}" 2>/dev/null || break; sleep 0.1; done
took=$(( ($(date +%s%N) - start) / 1000000 ))
check "... and SIGTERM still stops it, its writer stuck on the pipe (took $took ms)" \
    bash -c "! kill -0 ${pids[-1]} 2>/dev/null"
kill -KILL "${pids[-1]}" 2>/dev/null; wait "${pids[-1]}" 2>/dev/null
exec 7<&-

# --- one hop over several URLs: --next URL1,URL2 shares calls between them, and
# goes around one that stops
serve L1
serve L2
"$rpcd" serve --listen "$(url M)" --name M --log "$dir/M.log" --next "$(url L1),$(url L2)" &
pids+=($!)
for _ in $(seq 100); do call "$(url M)" /dctx.Admin/Stats --timeout 200ms 2>/dev/null |
    grep -q '"connections":2' && break; sleep 0.05; done
for i in 1 2 3 4; do call "$(url M)" /dctx.demo.Demo/Chain --data 1ms; done >"$dir/multi.out"
check "--next URL1,URL2: 4 Chain calls answered by L1 and L2 in turn" \
    test "$(grep -c '^L1$' "$dir/multi.out") $(grep -c '^L2$' "$dir/multi.out")" = "2 2"
check "... one hop in Stats, its URL as given, connected" \
    bash -c "call() { timeout 20 '$rpcd' call \"\$@\"; }; call '$(url M)' /dctx.Admin/Stats |
        grep -q '\"url\":\"$(url L1),$(url L2)\",\"connected\":true'"
kill -TERM "${pids[-3]}" # L1
wait "${pids[-3]}"
for i in 1 2 3 4; do call "$(url M)" /dctx.demo.Demo/Chain --data 1ms; done >"$dir/multi.out"
check "... L1 stopped: every call OK, answered by L2" \
    test "$(grep -c '^OK$' "$dir/multi.out") $(grep -c '^L2$' "$dir/multi.out")" = "4 4"
"$rpcd" serve --listen "$(url N)" --next "$(url L1),,x" >/dev/null 2>"$dir/err.txt"
check "--next with an empty URL in its list: exit 64" test $? -eq 64

# --- graceful shutdown: SIGTERM drains: a call in flight past the grace is stopped
# with a cause, rpcd exits 0
call "$(url C)" /dctx.demo.Demo/Sleep --data 30s >"$dir/sleep.out" 2>&1 &
caller=$!
sleep 0.3
kill -TERM "${pids[0]}"
wait "${pids[0]}"; rc=$?
check "SIGTERM: rpcd exits 0" test $rc -eq 0
wait "$caller"
check "... the in-flight call, past the 500 ms grace, ended UNAVAILABLE" grep -q '^UNAVAILABLE' "$dir/sleep.out"
check "... saying the drain's grace ran out" grep -q "grace" "$dir/sleep.out"
check "... and the log says so" grep -q '"event":"stopped"' "$dir/C.log"

echo "$failures failure(s)"
exit $((failures > 0))
