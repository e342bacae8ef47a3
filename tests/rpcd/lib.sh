# lib.sh - sourced by the rpcd tests: a scratch directory, the servers a
# test starts (stopped with SIGTERM at exit), and the checks that count
# failures. Set rpcd (the binary) and test_name before sourcing it.
dir=$(mktemp -d "/tmp/dctx-$test_name-XXXXXX")
pids=()
failures=0
# stop_servers: SIGTERM every server started so far and wait for it: its
# log is then whole (rpcd writes its lines in batches, and at exit).
stop_servers() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    pids=()
}
cleanup() {
    stop_servers
    rm -rf "$dir"
}
trap cleanup EXIT
# wait_line FILE ERE: up to 5 s for a line matching ERE to be written
# (rpcd writes its log in batches, within milliseconds: a line an action
# caused is waited for, never expected at once).
wait_line() {
    for _ in $(seq 100); do grep -Eq -- "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    return 1
}

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
check() { # description, then a command that must succeed
    local what=$1
    shift
    if "$@"; then echo "ok: $what"; else fail "$what"; fi
}
call() { timeout 20 "$rpcd" call "$@"; }
# serve NAME ARGS...: rpcd serve --name NAME --log NAME.log ARGS in the
# background (stopped at exit), once its serving line is written.
serve() { # name, then rpcd serve's arguments; waits for its serving line
    local name=$1
    shift
    "$rpcd" serve --name "$name" --log "$dir/$name.log" "$@" &
    pids+=($!)
    wait_line "$dir/$name.log" '"event":"serving"' || fail "$name did not start"
}
# free_port: a tcp port on 127.0.0.1 free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# http URL: the response's status line and body, via python3 (no curl
# needed); "000" when nothing answers.
http() {
    python3 - "$1" 2>/dev/null <<'PY'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode())
except Exception as e:
    print("000")
PY
}
