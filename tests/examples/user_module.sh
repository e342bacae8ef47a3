#!/bin/sh
# user_module.sh RPCD GREETER_SO - load the greeter module into `rpcd serve`
# and call it with `rpcd call`: a greeting, a greeting naming the tenant,
# and a call whose 30 ms deadline ends the 100 ms lookup (the module's
# handler stops with DEADLINE_EXCEEDED). rpcd must then stop cleanly.
set -eu
rpcd=$1
module=$2
dir=$(mktemp -d /tmp/dctx-greeter-XXXXXX)
url="ipc://$dir/greeter.ipc"
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- rpcd log:"; cat "$dir/greeter.log"; exit 1; }

"$rpcd" serve --listen "$url" --name greeter --module "$module" --log "$dir/greeter.log" &
pid=$!
up=0
for _ in $(seq 100); do
    if timeout 10 "$rpcd" call "$url" /dctx.Admin/Stats --timeout 200ms >/dev/null 2>&1; then up=1; break; fi
    sleep 0.05
done
[ $up = 1 ] || fail "rpcd with the module did not come up"
for _ in $(seq 100); do grep -q '"event":"module_loaded"' "$dir/greeter.log" && break; sleep 0.05; done
grep -q '"event":"module_loaded"' "$dir/greeter.log" || fail "no module_loaded in the log"

# call EXPECTED_EXIT ARGS...: one `rpcd call`, its output in $got. A hang
# (timeout's 124) is a failure of its own.
call() {
    want=$1
    shift
    echo "\$ rpcd call $url /acme.Greeter/Hello $*"
    rc=0
    got=$(timeout 20 "$rpcd" call "$url" /acme.Greeter/Hello "$@") || rc=$?
    echo "$got" | sed 's/^/  /'
    [ $rc != 124 ] || fail "rpcd call hung"
    [ $rc = "$want" ] || fail "rpcd call exited $rc, not $want"
}

call 0 --data world
[ "$got" = "$(printf 'OK\nhello, world')" ] || fail "unexpected greeting"
call 0 --data world --value tenant=acme
[ "$got" = "$(printf 'OK\nhello, world (tenant acme)')" ] || fail "unexpected greeting"
call 4 --data world --timeout 30ms
[ "$(echo "$got" | head -n 1)" = DEADLINE_EXCEEDED ] || fail "no DEADLINE_EXCEEDED"
# The module's handler stopped at the deadline, well before its 100 ms lookup.
# rpcd writes its log in batches, within milliseconds: wait for the line.
for _ in $(seq 100); do
    end=$(grep '"event":"call_end","method":"/acme.Greeter/Hello","status":"DEADLINE_EXCEEDED"' "$dir/greeter.log" | tail -n 1)
    [ -z "$end" ] || break
    sleep 0.05
done
[ -n "$end" ] || fail "the handler did not end with DEADLINE_EXCEEDED"
us=$(echo "$end" | sed 's/.*"elapsed_us":\([0-9]*\).*/\1/')
echo "the module's handler stopped after $us us"
[ "$us" -lt 90000 ] || fail "the handler ran $us us, past the deadline"

kill "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ $rc = 0 ] || fail "rpcd exited $rc on SIGTERM"
echo "ok: the module answered, saw the tenant, honoured its deadline; rpcd stopped cleanly"
