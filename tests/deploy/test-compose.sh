#!/bin/sh
# test-compose.sh RPCD COMPOSE_FILE - docker-compose.yml, checked and run
# for real without Docker:
#   1. parse it (yaml-flat.awk) and check it (compose-plan.awk): every
#      service's command is a valid rpcd command line, every --next names a
#      server of the file on a port it listens on, the gateway takes gRPC
#      calls, the client's script is rpcd calls to them covering the three
#      scenarios;
#   2. start each server's own command as a local process, its tcp listen
#      address turned into an ipc socket in a scratch directory and each
#      --next pointed at the matching socket; wait until each one's own
#      healthcheck passes, as `depends_on: service_healthy` does;
#   3. run the client's script (sh -c, as in the container) with `rpcd`
#      recording every call, and check each call against what its flags
#      ask for: DEADLINE_EXCEEDED with every hop started within the budget;
#      CANCELLED with "cancel: stopped" and every hop canceled; OK from the
#      leaf with the values, the trace id seen at every hop; Stats;
#   4. call the gateway over gRPC, as a client outside the deployment
#      would (grpc-call.py, Debian's /usr/bin/python3 with grpcio):
#      Health/Check answers SERVING; Chain with each --grpc-forward key as
#      metadata gets OK from the leaf with the values, every hop ending OK;
#      Chain on a 300 ms gRPC timeout gets DEADLINE_EXCEEDED, every hop
#      started within the budget. The gateway listens on 127.0.0.1:0 (any
#      free port; its grpc_listening log line says which). Skipped, saying
#      so, when /usr/bin/python3 (or DCTX_TEST_GRPC_PYTHON) has no grpc
#      module, or rpcd has no gRPC (-DDCTX_GRPC=OFF: the gateway then runs
#      without its gRPC flags);
#   5. stop every server with SIGTERM: each must exit 0.
# POSIX sh and awk. Every wait is bounded; DCTX_TIME_SCALE (default 1)
# stretches the bounds for sanitizer builds; DCTX_TEST_KEEP=1 keeps the
# scratch directory.
set -eu

rpcd=${1:?usage: test-compose.sh RPCD COMPOSE_FILE}
compose=${2:?usage: test-compose.sh RPCD COMPOSE_FILE}
here=$(cd "$(dirname "$0")" && pwd)
scale=${DCTX_TIME_SCALE:-1}
# glibc's fatal messages (an abort in a library) to stderr, not the terminal,
# so that a process that dies says why in its captured stderr.
export LIBC_FATAL_STDERR_=1
dir=$(mktemp -d /tmp/dctx-deploy-XXXXXX)
pids=""
status=1

cleanup() {
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in $pids; do wait "$pid" 2>/dev/null || true; done
    if [ "$status" -ne 0 ]; then
        for log in "$dir"/logs/*.log; do
            [ -f "$log" ] || continue
            echo "---- last lines of $(basename "$log")" >&2
            tail -n 12 "$log" >&2
        done
    fi
    if [ -n "${DCTX_TEST_KEEP:-}" ]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "test-compose: FAIL: $*" >&2
    exit 1
}
say() { printf '== %s\n' "$*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---- 1. parse and check ---------------------------------------------------------
say "parse and check $compose"
awk -f "$here/yaml-flat.awk" "$compose" >"$dir/flat" || fail "$compose is not in the simple shape this test reads"
# The gateway's gRPC port: any free one (the plan's 0), unless rpcd has no
# gRPC: then its gRPC flags are left out, and so are the gRPC calls.
grpc_py=${DCTX_TEST_GRPC_PYTHON:-/usr/bin/python3} # Debian's, with python3-grpcio
grpc_skip=""
grpc_plan="grpc_port=0"
if "$rpcd" serve --grpc-listen 127.0.0.1:0 2>&1 | grep -q 'built without gRPC'; then
    grpc_skip="$rpcd was built without gRPC (-DDCTX_GRPC=OFF): the gateway runs without --grpc-*"
    grpc_plan="grpc=off"
elif ! "$grpc_py" -c 'import grpc' >/dev/null 2>&1; then
    grpc_skip="$grpc_py has no grpc module (Debian: apt-get install python3-grpcio)"
fi
awk -v dir="$dir" -v "$grpc_plan" -f "$here/compose-plan.awk" "$dir/flat" >"$dir/plan" || fail "$compose: see above"
sed 's/^/    /' "$dir/plan"

# ---- 2. the servers ---------------------------------------------------------------
mkdir "$dir/logs" "$dir/bin" "$dir/calls"
set -f # the plan's words are plain (compose-plan.awk checked); no globbing
say "start the servers on ipc sockets, from the leaf up (depends_on: service_healthy)"
while read -r kind svc cmd; do
    case $kind in serve | health) ;; *) continue ;; esac
    # The command as the file has it, with the real rpcd for its first word
    # shellcheck disable=SC2086 # split into its words, on purpose
    set -- $cmd
    shift
    case $kind in
    serve)
        "$rpcd" "$@" >"$dir/logs/$svc.out" 2>"$dir/logs/$svc.log" &
        pid=$!
        pids="$pids $pid"
        echo "$svc $pid" >>"$dir/pids"
        ;;
    health) # its own healthcheck, until it passes; then the next one starts
        up=0
        i=0
        while [ $i -lt $((100 * scale)) ]; do
            if timeout 10 "$rpcd" "$@" >/dev/null 2>&1; then up=1; break; fi
            kill -0 "$pid" 2>/dev/null || fail "$svc exited at start: $(cat "$dir/logs/$svc.log")"
            sleep 0.1
            i=$((i + 1))
        done
        [ $up = 1 ] || fail "$svc's healthcheck never passed"
        echo "    $svc healthy"
        ;;
    esac
done <"$dir/plan"
set +f

# ---- 3. the client ----------------------------------------------------------------
# rpcd as the client's script sees it: the real one, every call recorded
# (its arguments, where each server's log was at its start, its output, exit
# status and time; --log added, for its call_end event), and bounded.
cat >"$dir/bin/rpcd" <<EOF
#!/bin/sh
d="$dir"
n=\$((\$(cat "\$d/calls/count" 2>/dev/null || echo 0) + 1))
echo "\$n" >"\$d/calls/count"
printf '%s\n' "\$@" >"\$d/calls/\$n.args"
sleep 0.05 # the hops' lines of the call before land (rpcd writes its log in batches)
for log in "\$d"/logs/*.log; do echo "\$(basename "\$log" .log) \$(wc -l <"\$log")"; done >"\$d/calls/\$n.marks"
case " \$* " in *" --log "*) ;; *) set -- "\$@" --log "\$d/calls/\$n.log" ;; esac
t0=\$(date +%s%N)
timeout $((30 * scale)) "$rpcd" "\$@" >"\$d/calls/\$n.out" 2>"\$d/calls/\$n.err"
rc=\$?
echo "\$rc \$(((\$(date +%s%N) - t0) / 1000000))" >"\$d/calls/\$n.rc"
cat "\$d/calls/\$n.out"
exit \$rc
EOF
chmod +x "$dir/bin/rpcd"
client=$(awk '$1 == "client" { print $2 }' "$dir/plan")
say "run $client's script (/bin/sh -c, rpcd calls to the gateway)"
set +e
PATH="$dir/bin:$PATH" timeout $((120 * scale)) /bin/sh -c "$(cat "$dir/client.sh")" >"$dir/client.out" 2>&1
rc=$?
set -e
sed 's/^/    | /' "$dir/client.out"
[ "$rc" -eq 0 ] || fail "the client's script exited $rc (docker compose --exit-code-from client would fail)"

# ---- checks per call ---------------------------------------------------------------
chain=$(awk '$1 == "chain" { $1 = ""; sub(/^ /, ""); print }' "$dir/plan")
leaf=$(awk '$1 == "leaf" { print $2 }' "$dir/plan")
chain_method=/dctx.demo.Demo/Chain

# hop_lines N HOP: HOP's log lines since call N started
hop_lines() {
    m=$(awk -v h="$2" '$1 == h { print $2 }' "$dir/calls/$1.marks")
    tail -n +"$((m + 1))" "$dir/logs/$2.log"
}
# wait_hop N HOP ERE: until HOP logged a line matching ERE since call N (5 s)
wait_hop() {
    deadline=$(($(now_ms) + 5000 * scale))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        hop_lines "$1" "$2" | grep -Eq -- "$3" && return 0
        sleep 0.05
    done
    return 1
}
# field NAME: the value of "NAME" on each line of stdin
field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }
start_re="\"event\":\"call_start\",\"method\":\"$chain_method\""
end_re() { echo "\"event\":\"call_end\",\"method\":\"$chain_method\",\"status\":\"$1\""; }
# deadline_hops N US: every hop's Chain call of call N started with at most
# US of budget and ended on it, within it; sets note to the hops that ended
# CANCELLED (caller lost) rather than DEADLINE_EXCEEDED
deadline_hops() {
    note=""
    for hop in $chain; do
        wait_hop "$1" "$hop" "$(end_re '[A-Z_]+')" || fail "call $1: $hop's call did not end"
        left=$(hop_lines "$1" "$hop" | grep -- "$start_re" | head -n 1 | field deadline_in_us)
        [ -n "$left" ] && [ "$left" -gt 0 ] && [ "$left" -le "$2" ] ||
            fail "call $1: $hop started with deadline_in_us=${left:-none}, expected 0 < it <= $2"
        end=$(hop_lines "$1" "$hop" | grep -E -- "$(end_re '[A-Z_]+')" | head -n 1)
        st=$(echo "$end" | field status)
        took=$(echo "$end" | field elapsed_us)
        [ "$took" -le $((left + 100000 * scale)) ] || fail "call $1: $hop ran ${took} us on a ${left} us budget"
        case $st in
        DEADLINE_EXCEEDED) ;;
        CANCELLED)
            # rpcd call packs the budget it sends before its connection
            # is up (lib/rpc_client.c: pack_call, then wait_connected),
            # so the first hop's deadline is later than the client's by
            # the connect time; the client ends on its own deadline and
            # closes its channel, which can abort the cancel it was
            # pushing: the hops then see their caller go away a few ms
            # before their own deadline. Still bounded (checked above).
            echo "$end" | grep -q 'caller lost' || fail "call $1: $hop's call ended CANCELLED, not on its deadline: $end"
            note="$note $hop"
            ;;
        *) fail "call $1: $hop's call ended $st, expected DEADLINE_EXCEEDED" ;;
        esac
    done
}

ncalls=$(cat "$dir/calls/count" 2>/dev/null || echo 0)
nexpect=$(grep -c '^expect ' "$dir/plan")
[ "$ncalls" -eq "$nexpect" ] || fail "the script made $ncalls rpcd calls, the file has $nexpect"
say "check each call"
grep '^expect ' "$dir/plan" >"$dir/expect"
while read -r _ n what a _b rest; do
    read -r rc ms <"$dir/calls/$n.rc"
    out="$dir/calls/$n.out"
    first=$(sed -n 1p "$out")
    if [ "$rc" -gt 128 ] && [ "$rc" -ne 137 ]; then
        fail "call $n: rpcd call died of signal $((rc - 128)); its stderr: $(head -c 600 "$dir/calls/$n.err")"
    fi
    if [ "$rc" -eq 124 ]; then
        ended=$(grep '"event":"call_end"' "$dir/calls/$n.log" 2>/dev/null | field status)
        [ -z "$ended" ] || fail "call $n: rpcd call ended its call ($ended) but did not exit within $((30 * scale)) s: it hung in its shutdown"
        fail "call $n: rpcd call did not end within $((30 * scale)) s"
    fi
    case $what in
    deadline) # a US
        [ "$rc" -eq 4 ] && [ "$first" = DEADLINE_EXCEEDED ] || fail "call $n: $first (exit $rc), expected DEADLINE_EXCEEDED"
        # Not much sooner than the deadline (each hop keeps a small reply
        # reserve, so the last one runs out a little first), nor much later.
        [ "$ms" -ge $((a * 9 / 10000)) ] && [ "$ms" -lt $((a / 1000 + 5000 * scale)) ] || fail "call $n took $ms ms"
        deadline_hops "$n" "$a"
        echo "    call $n: DEADLINE_EXCEEDED after $ms ms; every hop ($chain) started within the $((a / 1000)) ms budget and ended on it"
        [ -z "$note" ] || echo "    note: ended CANCELLED (caller lost, at its deadline) rather than DEADLINE_EXCEEDED:$note"
        ;;
    cancel) # a US
        [ "$rc" -eq 1 ] && [ "$first" = CANCELLED ] || fail "call $n: $first (exit $rc), expected CANCELLED"
        grep -qx 'cancel: stopped' "$out" || fail "call $n: no \"cancel: stopped\""
        [ "$ms" -lt $((a / 1000 + 5000 * scale)) ] || fail "call $n took $ms ms"
        for hop in $chain; do
            wait_hop "$n" "$hop" '"event":"cancel_received","cause":"CANCELLED","cause_message":"[^"]*","outcome":"stopped"' ||
                fail "call $n: $hop did not receive the cancel"
            wait_hop "$n" "$hop" "$(end_re CANCELLED)" || fail "call $n: $hop's call did not end CANCELLED"
        done
        echo "    call $n: CANCELLED, cancel: stopped; every hop ($chain) received the cancel and ended CANCELLED"
        ;;
    ok) # a TRACE, _b the data (us), rest K=V...
        [ "$rc" -eq 0 ] && [ "$first" = OK ] || fail "call $n: $first (exit $rc), expected OK"
        [ "$(sed -n 2p "$out")" = "$leaf" ] || fail "call $n: the answer does not come from the leaf $leaf"
        for kv in $rest; do grep -qxF -- "$kv" "$out" || fail "call $n: value $kv did not reach $leaf"; done
        trace=""
        if [ "$a" = 1 ]; then
            trace=$(sed -n 's/^trace: \([0-9a-f]\{32\}\)$/\1/p' "$out")
            [ -n "$trace" ] || fail "call $n: no trace id printed"
        fi
        for hop in $chain; do
            wait_hop "$n" "$hop" "$(end_re OK)" || fail "call $n: $hop's call did not end OK"
            if [ -n "$trace" ]; then
                got=$(hop_lines "$n" "$hop" | grep -- "$start_re" | head -n 1 | field trace_id)
                [ "$got" = "$trace" ] || fail "call $n: $hop saw trace ${got:-none}, the client started $trace"
            fi
        done
        echo "    call $n: OK from $leaf with$( [ -n "$rest" ] && echo " $rest")${trace:+, trace $trace seen by every hop}"
        ;;
    stats) # a NAME
        [ "$rc" -eq 0 ] && [ "$first" = OK ] || fail "call $n: $first (exit $rc), expected OK"
        sed -n 2p "$out" | grep -q "^{\"name\":\"$a\"," || fail "call $n: not $a's Stats JSON"
        echo "    call $n: OK, $a's Stats"
        ;;
    *) fail "unknown expectation $what" ;;
    esac
done <"$dir/expect"

# ---- 4. gRPC at the gateway -----------------------------------------------------------
# grpc_call NAME METHOD DATA TIMEOUT_S [KEY=VALUE]...: one gRPC call to the
# gateway, recorded as calls/NAME.* (marks: where each log was, as for the
# script's calls); sets code, gms (the call's time), hex, text
grpc_call() {
    name=$1
    shift
    sleep 0.05
    for log in "$dir"/logs/*.log; do echo "$(basename "$log" .log) $(wc -l <"$log")"; done >"$dir/calls/$name.marks"
    set +e
    timeout $((30 * scale)) "$grpc_py" "$here/grpc-call.py" "127.0.0.1:$grpc_port" "$@" \
        >"$dir/calls/$name.out" 2>"$dir/calls/$name.err"
    rc=$?
    set -e
    [ "$rc" -eq 0 ] || fail "gRPC call $name: grpc-call.py exited $rc: $(head -c 600 "$dir/calls/$name.err")"
    read -r code gms <"$dir/calls/$name.out"
    hex=$(sed -n 2p "$dir/calls/$name.out")
    text=$(tail -n +3 "$dir/calls/$name.out")
}
if [ -n "$grpc_skip" ]; then
    say "gRPC calls to the gateway: skipped ($grpc_skip)"
else
    # grpc SERVICE PORT KEY...: the plan's port is 0, the log says which
    set -f
    # shellcheck disable=SC2046 # split into its words, on purpose
    set -- $(grep '^grpc ' "$dir/plan")
    set +f
    [ "$#" -ge 3 ] || fail "the plan has no grpc line"
    gsvc=$2
    shift 3
    grpc_port=""
    deadline=$(($(now_ms) + 5000 * scale))
    while [ -z "$grpc_port" ] && [ "$(now_ms)" -lt "$deadline" ]; do
        grpc_port=$(sed -n 's/.*"event":"grpc_listening".*"port":\([0-9]*\).*/\1/p' "$dir/logs/$gsvc.log" | head -n 1)
        [ -n "$grpc_port" ] || sleep 0.05
    done
    [ -n "$grpc_port" ] || fail "$gsvc logged no grpc_listening (its --grpc-listen)"
    metadata=""
    for key in "$@"; do metadata="$metadata $key=acme"; done
    say "call $gsvc over gRPC (127.0.0.1:$grpc_port, $grpc_py with grpcio)"

    grpc_call health /grpc.health.v1.Health/Check "" $((5 * scale))
    [ "$code" = OK ] && [ "$hex" = 0801 ] || fail "gRPC Health/Check: $code, reply ${hex}, expected OK and 0801 (SERVING)"
    echo "    Health/Check: OK, SERVING (08 01)"

    # shellcheck disable=SC2086 # KEY=VALUE words, on purpose
    grpc_call chain "$chain_method" 20ms $((5 * scale)) $metadata
    [ "$code" = OK ] || fail "gRPC Chain 20ms: $code ($text), expected OK"
    [ "$(echo "$text" | sed -n 1p)" = "$leaf" ] || fail "gRPC Chain: the answer does not come from the leaf $leaf: $text"
    for kv in $metadata; do
        echo "$text" | grep -qxF -- "$kv" || fail "gRPC Chain: metadata $kv did not reach $leaf as a value: $text"
    done
    for hop in $chain; do
        wait_hop chain "$hop" "$(end_re OK)" || fail "gRPC Chain: $hop's call did not end OK"
    done
    wait_hop chain "$gsvc" '"event":"grpc_call_end","method":"/dctx.demo.Demo/Chain",.*"status":"OK"' ||
        fail "gRPC Chain: $gsvc logged no grpc_call_end OK"
    echo "    Chain 20ms:${metadata:+ with$metadata,} OK from $leaf in $gms ms${metadata:+, the values there}; every hop ($chain) ended OK"

    grpc_call deadline "$chain_method" 10s 0.3
    [ "$code" = DEADLINE_EXCEEDED ] || fail "gRPC Chain 10s on a 300 ms timeout: $code ($text), expected DEADLINE_EXCEEDED"
    [ "$gms" -ge 270 ] && [ "$gms" -lt $((300 + 5000 * scale)) ] || fail "gRPC Chain on a 300 ms timeout took $gms ms"
    deadline_hops deadline 300000
    wait_hop deadline "$gsvc" '"event":"grpc_call_end","method":"/dctx.demo.Demo/Chain",.*"status":"DEADLINE_EXCEEDED"' ||
        fail "gRPC Chain: $gsvc logged no grpc_call_end DEADLINE_EXCEEDED"
    echo "    Chain 10s, 300 ms timeout: DEADLINE_EXCEEDED after $gms ms; every hop ($chain) started within the 300 ms budget and ended on it"
    [ -z "$note" ] || echo "    note: ended CANCELLED (caller lost, at its deadline) rather than DEADLINE_EXCEEDED:$note"
fi

# ---- 5. clean exits --------------------------------------------------------------------
say "stop the servers (SIGTERM)"
while read -r svc pid; do kill -TERM "$pid"; done <"$dir/pids"
while read -r svc pid; do
    deadline=$(($(now_ms) + 10000 * scale))
    while kill -0 "$pid" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && fail "$svc did not exit within $((10 * scale)) s of SIGTERM"
    set +e
    wait "$pid"
    st=$?
    set -e
    [ "$st" -eq 0 ] || fail "$svc exited with status $st"
done <"$dir/pids"
pids=""
echo "    every server exited 0"
status=0
say "test-compose: all checks passed"
