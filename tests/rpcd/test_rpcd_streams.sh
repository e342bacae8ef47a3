#!/usr/bin/env bash
# test_rpcd_streams.sh RPCD - rpcd's stream methods and `rpcd call
# --stream`, between processes: Count, Sum and EchoStream as fixed; Count
# relayed through three hops end to end; a cancel (--cancel-after) and a
# deadline (--timeout) mid-stream reach every hop, each logging it; a
# caller killed with SIGKILL mid-stream has its handler canceled; bad
# requests get INVALID_ARGUMENT saying why.
set -u
rpcd=$(realpath "$1")
test_name=rpcd-streams
. "$(dirname "$0")/lib.sh"
cd "$dir" || exit 1

stream() { timeout 20 "$rpcd" call "$@" --stream; }

c="ipc://$dir/c.ipc" b="ipc://$dir/b.ipc" a="ipc://$dir/a.ipc"
serve C --listen "$c"
serve B --listen "$b" --next "$c"
serve A --listen "$a" --next "$b"

out=$(stream "$c" /dctx.demo.Demo/Count --data "5 1ms" </dev/null)
check "Count 5: the messages 1..5, then OK and an empty message" \
    test "$out" = "$(printf '1\n2\n3\n4\n5\nOK\n')"
out=$(printf '10\n-3\n100\n' | stream "$c" /dctx.demo.Demo/Sum)
check "Sum of three lines: OK and 107" test "$out" = "$(printf 'OK\n107')"
out=$(printf 'b\nc\n' | stream "$c" /dctx.demo.Demo/EchoStream --data a)
check "EchoStream: --data first, then each line, back as they came" \
    test "$out" = "$(printf 'a\nb\nc\nOK\n')"
out=$(printf 'x\n' | stream "$c" /dctx.demo.Demo/Sum)
rc=$?
check "Sum of a line that is no integer: exit 3 (got $rc)" test "$rc" -eq 3
check "... saying which" grep -q 'message 1 is not an integer: "x"' <<<"$out"
out=$(stream "$c" /dctx.demo.Demo/Count --data "five" </dev/null)
check "Count with a bad request: INVALID_ARGUMENT naming the form" grep -q 'N INTERVAL' <<<"$out"
out=$(timeout 20 "$rpcd" call "$c" /dctx.demo.Demo/Count --data "5 1ms")
rc=$?
check "Count as a unary call: UNIMPLEMENTED (exit 12, got $rc)" test "$rc" -eq 12
check "... saying it is a stream method" grep -q "is a stream method" <<<"$out"
out=$(stream "ipc://$dir/nobody.ipc" /dctx.demo.Demo/Count --data "5 1ms" </dev/null)
rc=$?
check "a stream to no server: UNAVAILABLE (exit 14, got $rc)" test "$rc" -eq 14
check "... saying there is no connection" grep -q "^no connection to ipc://" <<<"$out"

out=$(stream "$a" /dctx.demo.Demo/Count --data "200 0ms" </dev/null)
check "Count relayed through A, B and C: 200 messages in order, then OK" \
    test "$out" = "$(seq 1 200; printf 'OK\n')"
check "... each relaying hop logged what it relayed" \
    wait_line A.log '"event":"stream_relayed","message":"Count: 200 messages from'

out=$(stream "$a" /dctx.demo.Demo/Count --data "7 1ms" --trace </dev/null)
id=$(sed -n 's/^trace: //p' <<<"$out")
check "a traced stream prints its trace id" test -n "$id"
check "... C logged its stream's end with the messages each way" \
    wait_line C.log "\"event\":\"stream_end\",.*\"messages_in\":1,\"messages_out\":7,\"trace_id\":\"$id\""
stop_servers # the logs are whole
view=$("$rpcd" trace A.log B.log C.log --trace-id "$id")
check "rpcd trace shows the stream as one span per hop with its messages" \
    test "$(grep -c 'stream: 1 in, 7 out' <<<"$view")" -eq 3
serve C --listen "$c"
serve B --listen "$b" --next "$c"
serve A --listen "$a" --next "$b"

out=$(stream "$a" /dctx.demo.Demo/Count --data "1000 20ms" --cancel-after 300ms \
    --log caller.log </dev/null)
rc=$?
check "a cancel mid-stream through three hops: CANCELLED (exit 1, got $rc)" test "$rc" -eq 1
check "... the caller logged cancel_sent, then call_end CANCELLED" \
    test "$(grep -o '"event":"[a-z_]*"' caller.log | tr '\n' ' ')" = \
    '"event":"cancel_sent" "event":"call_end" '
check "... call_end names the stream's method and status" \
    grep -q '"event":"call_end","method":"/dctx.demo.Demo/Count","status":"CANCELLED"' caller.log
n=$(grep -c '^[0-9]*$' <<<"$out")
check "... after some of the messages ($n)" test "$n" -ge 1 -a "$n" -lt 1000
for h in B C; do
    check "... and $h's handler saw the cancel" \
        wait_line $h.log '"event":"cancel_received","cause":"CANCELLED".*"outcome":"stopped"'
done
check "... C's Count ended CANCELLED" \
    wait_line C.log '"event":"stream_end","method":"/dctx.demo.Demo/Count","status":"CANCELLED"'

out=$(stream "$a" /dctx.demo.Demo/Count --data "1000 20ms" --timeout 300ms </dev/null)
rc=$?
check "a deadline mid-stream through three hops: DEADLINE_EXCEEDED (exit 4, got $rc)" test "$rc" -eq 4
check "... C's Count ended DEADLINE_EXCEEDED" \
    wait_line C.log '"event":"stream_end","method":"/dctx.demo.Demo/Count","status":"DEADLINE_EXCEEDED"'

# A caller killed mid-stream: its handler is canceled ("caller lost").
"$rpcd" call "$c" /dctx.demo.Demo/Count --stream --data "1000 20ms" </dev/null >killed.txt &
k=$!
for _ in $(seq 100); do [ -s killed.txt ] && break; sleep 0.05; done
kill -KILL $k
wait $k 2>/dev/null
check "a caller killed with SIGKILL mid-stream: its Count is canceled, caller lost" \
    wait_line C.log '"event":"stream_end","method":"/dctx.demo.Demo/Count","status":"CANCELLED".*caller lost'

[ "$failures" -eq 0 ] && echo "all stream checks passed"
exit $((failures > 0))
