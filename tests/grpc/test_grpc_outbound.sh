#!/bin/bash
# rpcd serve --next grpc://HOST:PORT: a dctx chain whose last hops call a
# gRPC server of grpc-go (tests/grpc/go-peer, built offline from Debian's
# golang-google-grpc-dev) and one of Python's grpcio (py_server.py). Each
# server must see the remaining budget (never more), the cancel, the
# whitelisted values as metadata, and its status must come back.
# Usage: test_grpc_outbound.sh RPCD GO_PEER_DIR. 77: python3-grpcio or
# go is missing.
rpcd=$1
peer_dir=$2
test_name=grpc-outbound
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
$py -c 'import grpc' 2>/dev/null || { echo "skip: /usr/bin/python3 has no grpc (python3-grpcio)"; exit 77; }
command -v go >/dev/null || { echo "skip: no go (golang-go, golang-google-grpc-dev)"; exit 77; }
source "$here/../rpcd/lib.sh"

mkdir -p "$peer_dir"
if [ ! -x "$peer_dir/grpcpeer" ] || [ "$here/go-peer/src/grpcpeer/main.go" -nt "$peer_dir/grpcpeer" ]; then
    GOCACHE="$peer_dir/gocache" "$here/go-peer/build.sh" "$peer_dir" || { echo "FAIL: go-peer build"; exit 1; }
fi

# The two gRPC servers, each waited for.
pgo=$(free_port)
ppy=$(free_port)
"$peer_dir/grpcpeer" serve --listen "127.0.0.1:$pgo" --report "$dir/go.jsonl" >"$dir/go.out" &
pids+=($!)
$py "$here/py_server.py" "$ppy" "$dir/py.jsonl" >"$dir/py.out" &
pids+=($!)
wait_line "$dir/go.out" listening || fail "grpcpeer did not start"
wait_line "$dir/py.out" listening || fail "py_server.py did not start"

# a fans Chain out to bgo and bpy; each calls its gRPC server.
pa=$(free_port)
pbgo=$(free_port)
pbpy=$(free_port)
serve bgo --listen "tcp://127.0.0.1:$pbgo" --next "grpc://127.0.0.1:$pgo"
serve bpy --listen "tcp://127.0.0.1:$pbpy" --next "grpc://127.0.0.1:$ppy"
serve a --listen "tcp://127.0.0.1:$pa" --next "tcp://127.0.0.1:$pbgo" --next "tcp://127.0.0.1:$pbpy"
a="tcp://127.0.0.1:$pa"

# report SERVER N FIELD: the FIELD of the N-th (from 1) "call" report line
# of SERVER (go or py), once it is written.
report() {
    wait_line "$dir/$1.jsonl" '"event": ?"call"'
    $py - "$dir/$1.jsonl" "$2" "$3" <<'PY'
import json, sys
calls = [l for l in map(json.loads, open(sys.argv[1])) if l["event"] == "call"]
v = calls[int(sys.argv[2]) - 1]
for k in sys.argv[3].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print(json.dumps(v) if not isinstance(v, str) else v)
PY
}

# 1. An answer, with values as metadata and the budget.
out=$(call "$a" /dctx.demo.Demo/Chain --data hello --timeout 2s --value x-custom=v1 \
    --value X-Upper=no)
check "Chain through both gRPC servers: OK" test "$(head -1 <<<"$out")" = OK
check "grpc-go answered" grep -q "grpc-go:hello" <<<"$out"
check "Python answered" grep -q "python:hello" <<<"$out"
for s in go py; do
    check "$s: the value crossed as metadata" test "$(report $s 1 metadata.x-custom)" = '["v1"]'
    check "$s: a value whose name is no gRPC key stays behind" \
        test "$(report $s 1 metadata.X-Upper)$(report $s 1 metadata.x-upper)" = nullnull
    left=$(report $s 1 remaining_ms)
    check "$s: the server's deadline is under the caller's 2 s ($left ms)" \
        $py -c "import sys; sys.exit(not 1500 < float(sys.argv[1]) < 2000)" "$left"
done
# Never more than the hop had: the budget bgo's handler got, against what
# grpc-go saw.
hop_us=$($py -c '
import json, sys
for l in map(json.loads, open(sys.argv[1])):
    if l.get("event") == "call_start": print(l["deadline_in_us"]); break' "$dir/bgo.log")
check "go: the server's budget is not above the hop's ($(report go 1 remaining_ms) ms <= $hop_us us)" \
    $py -c "import sys; sys.exit(not float(sys.argv[1]) * 1000 <= int(sys.argv[2]))" \
    "$(report go 1 remaining_ms)" "$hop_us"

# ended SERVER N: "ERR AFTER_MS" of the N-th (from 1) "ended" report line
# of SERVER, once it is written.
ended() {
    for _ in $(seq 100); do
        $py - "$dir/$1.jsonl" "$2" <<'PY' && return 0
import json, sys
ended = [l for l in map(json.loads, open(sys.argv[1])) if l["event"] == "ended"]
if len(ended) < int(sys.argv[2]): sys.exit(1)
e = ended[int(sys.argv[2]) - 1]
print(e["err"].replace(" ", "_"), e["after_ms"])
PY
        sleep 0.05
    done
    echo "none -1"
}
# within LO HI X: LO < X < HI, X a float.
within() { $py -c "import sys; sys.exit(not $1 < float(sys.argv[1]) < $2)" "$3"; }

# 2. The deadline: both servers see their call end when the budget it
# was given runs out (grpc-go's server sees the client's RST_STREAM at
# the deadline as a cancel: its err says "canceled").
out=$(call "$a" /dctx.demo.Demo/Chain --data "sleep 5s" --timeout 300ms)
check "a 300 ms deadline: DEADLINE_EXCEEDED" test "$(head -1 <<<"$out")" = DEADLINE_EXCEEDED
for s in go py; do
    read -r err after <<<"$(ended $s 1)"
    left=$(report $s 2 remaining_ms)
    check "$s: the server's call ended at its deadline ($err after $after ms; it had $left ms)" \
        $py -c "import sys; a, l = map(float, sys.argv[1:]); sys.exit(not (l < 300 and abs(a - l) < 10))" \
        "$after" "$left"
done

# 3. The cancel: both servers see it within milliseconds.
call "$a" /dctx.demo.Demo/Chain --data "sleep 5s" --timeout 5s --cancel-after 200ms >/dev/null
for s in go py; do
    read -r err after <<<"$(ended $s 2)"
    check "$s: the cancel reached the server ($err)" test "$err" = context_canceled -o "$err" = canceled
    # Measured from the server's handler start, which comes after the
    # caller's start by two hops' transit.
    check "$s: ... at 200 ms plus a little ($after ms, from the handler's start)" \
        within 150 260 "$after"
done

# 4. Every status and a UTF-8 message back from grpc-go, through two hops.
for code in $(seq 1 16); do
    out=$(call "tcp://127.0.0.1:$pbgo" /dctx.demo.Demo/Chain --data "status $code héllo ✓")
    rc=$?
    check "status $code from grpc-go comes back as $code" test "$rc" -eq "$code"
    check "... with its message" grep -q "héllo ✓" <<<"$out"
done
out=$(call "$a" /dctx.demo.Demo/Chain --data "status 7 dénied")
check "PERMISSION_DENIED from both servers through a's Chain" test $? -eq 7

# 5. Two gRPC next hops on one instance are called side by side: a cancel
# after 200 ms finds both servers' calls under way (called one after the
# other, the second would never have begun).
pc=$(free_port)
serve c --listen "tcp://127.0.0.1:$pc" --next "grpc://127.0.0.1:$pgo" --next "grpc://127.0.0.1:$ppy"
out=$(call "tcp://127.0.0.1:$pc" /dctx.demo.Demo/Chain --data "sleep 5s" --timeout 5s \
    --cancel-after 200ms)
check "two gRPC hops, canceled: CANCELLED" test "$(head -1 <<<"$out")" = CANCELLED
for s in go py; do
    read -r err after <<<"$(ended $s 3)"
    check "$s: its call began alongside the other's and saw the cancel ($err after $after ms)" \
        test "$err" = context_canceled -o "$err" = canceled
done
out=$(call "tcp://127.0.0.1:$pc" /dctx.demo.Demo/Chain --data "both")
check "two gRPC hops answer, in the order given" \
    test "$(printf '%s\n' "$out" | tail -n 2 | tr '\n' ' ')" = "grpc-go:both python:both "

# 6. Count relayed from a gRPC server's stream: every message in order,
# then OK; a cancel mid-stream reaches the gRPC server's handler.
pd=$(free_port)
serve d --listen "tcp://127.0.0.1:$pd" --next "grpc://127.0.0.1:$ppy"
out=$(call "tcp://127.0.0.1:$pd" /dctx.demo.Demo/Count --stream --data "5 5ms" \
    --value x-custom=v6 </dev/null)
check "Count relayed from the gRPC server: 1..5, then OK" \
    test "$(printf '%s\n' "$out" | head -n 6 | tr '\n' ' ')" = "1 2 3 4 5 OK "
check "... with the values as metadata" \
    grep -q '"request": "5 5ms".*"x-custom": \["v6"\]' "$dir/py.jsonl"
check "d logged what it relayed" \
    wait_line "$dir/d.log" '"event":"stream_relayed".*Count: 5 messages from grpc://'
call "tcp://127.0.0.1:$pd" /dctx.demo.Demo/Count --stream --data "1000 10ms" \
    --cancel-after 200ms </dev/null >"$dir/count.out"
check "a canceled relayed Count stops the caller CANCELLED" grep -q '^CANCELLED' "$dir/count.out"
read -r err after <<<"$(ended py 4)"
check "py: the cancel reached the gRPC server's Count ($err after $after ms)" \
    test "$err" = canceled

stop_servers
echo "$failures failures"
[ "$failures" -eq 0 ]
