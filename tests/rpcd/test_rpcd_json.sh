#!/usr/bin/env bash
# test_rpcd_json.sh RPCD - every JSON rpcd writes stays valid whatever its
# input: instance names, URLs, methods, values and status messages with
# quotes, backslashes, newlines, control bytes and invalid UTF-8. Two
# servers (a hostile --name each; a --next URL that tries to inject a field
# into Stats) log to files while calls are made; then every log line, the
# Stats answers and `rpcd bench`'s summary are parsed with Python's json
# module, strictly (no duplicate keys, no NaN, no raw control bytes, valid
# UTF-8), and what they say is compared with what was given, each invalid
# byte or sequence read as U+FFFD. Also: `rpcd call` to a URL where nothing
# listens names the cause. Every wait is bounded in count and time.
set -uo pipefail
rpcd=${1:?usage: test_rpcd_json.sh path/to/rpcd}
if ! command -v python3 >/dev/null; then
    echo "SKIP: python3 is needed to parse the JSON (scripts/lib/setup.sh installs it)"
    exit 77
fi
test_name=json
# shellcheck source=tests/rpcd/lib.sh
. "$(dirname "$0")/lib.sh"

# py SCRIPT ARGS...: run SCRIPT with the strict parser defined. Arguments
# reach it as the bytes given (os.fsencode undoes Python's decoding), and
# want() reads them as rpcd must have written them: invalid UTF-8 as U+FFFD.
py_prelude='
import json, os, sys
def pairs(kv):
    keys = [k for k, _ in kv]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError("duplicate keys %s" % dup)
    return dict(kv)
def no_constant(c):
    raise ValueError("not JSON: %s" % c)
def strict(data):
    return json.loads(data.decode("utf-8"), object_pairs_hook=pairs, parse_constant=no_constant)
def lines(path):
    with open(path, "rb") as f:
        return [l for l in f.read().split(b"\n") if l]
def want(i):
    return os.fsencode(sys.argv[i]).decode("utf-8", "replace")
def expect(ok, what):
    if not ok:
        print("    " + what, file=sys.stderr)
        sys.exit(1)
'
py() { python3 -c "$py_prelude$1" "${@:2}"; }

# ---- the hostile inputs ---------------------------------------------------------------
evil_name=$'evil"name\n\\back\x01\x7f\xff\xfe end'
leaf_name=$'leaf\t"q" caf\xc3\xa9 \xe2\x82 \xf0\x9f\x98\x80 \xed\xa0\x80'
h1="ipc://$dir/h.ipc"
h2="ipc://$dir/h\"quote\\back.ipc"
h3="ipc://$dir/h3.ipc"
leaf="ipc://$dir/leaf.ipc"
# (no comma: --next takes a comma-separated list of URLs)
injected="ipc://$dir/nobody\"}{\"injected\":true}{\"x\":\".ipc"
fail_message=$'bad "quote"\nsecond line\\ \xff\xc3( \x02 end'
evil_method=$'/evil.Svc/M\xc3\xa9"x\n\\\x01'
bad_utf8_method=$'/evil.Svc/M\xff\xfe'
evil_value=$'v"al\\ue\n\xff\xfe end'

start() { # url, then rpcd serve's arguments
    local url=$1
    shift
    "$rpcd" serve "$@" &
    pids+=($!)
    for _ in $(seq 100); do
        call "$url" /dctx.Admin/Stats --timeout 200ms >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "rpcd serve $* did not come up"
    return 1
}
start "$leaf" --listen "$leaf" --name "$leaf_name" --log "$dir/leaf.log"
start "$h1" --listen "$h1" --listen "$h2" --listen "$h3" --name "$evil_name" \
    --next "$leaf" --next "$injected" --log "$dir/h.log"

# ---- calls ----------------------------------------------------------------------------
out=$(call "$h2" /dctx.demo.Demo/Fail --data "INTERNAL $fail_message" --log "$dir/edge.log"); rc=$?
check "Fail with a hostile message answers INTERNAL (exit 13) on the quoted --listen URL" \
    test $rc -eq 13
check "... and prints the message as given" test "$out" = "INTERNAL"$'\n'"$fail_message"
out=$(call "$h1" /dctx.demo.Demo/Echo --data hello --value "k=$evil_value"); rc=$?
check "Echo with a hostile --value is OK and echoes the value's bytes" \
    test $rc -eq 0 -a "$out" = "OK"$'\n'"hello"$'\n'"k=$evil_value"
out=$(call "$leaf" /dctx.demo.Demo/Chain --data 1ms --value "k=$evil_value"); rc=$?
check "Chain at the leaf is OK and answers with its name first" \
    test $rc -eq 0 -a "$(sed -n 2p <<<"$out")" = "$leaf_name"
out=$(call "$h1" /dctx.demo.Demo/Chain --data 1ms --value "k=$evil_value" --log "$dir/edge.log")
rc=$?
check "Chain through a hop that is down is UNAVAILABLE (exit 14), naming the hop" \
    bash -c "test $rc -eq 14 && grep -qF 'injected' <<<\"\$1\"" _ "$out"
out=$(call "$h3" "$evil_method" --log "$dir/edge.log"); rc=$?
check "a hostile method name (quotes, newline, control bytes) is UNIMPLEMENTED (exit 12)" \
    test $rc -eq 12
out=$(call "$h3" "$bad_utf8_method" --log "$dir/edge.log" 2>&1); rc=$?
check "a method name with invalid UTF-8 is refused before it is sent (exit 3)" test $rc -eq 3
call "$h1" /dctx.demo.Demo/Sleep --data 5s --timeout 100ms >/dev/null; rc=$?
check "a Sleep past its deadline is DEADLINE_EXCEEDED (exit 4)" test $rc -eq 4
stats=$(call "$h1" /dctx.Admin/Stats); rc=$?
check "Stats is OK" test $rc -eq 0 -a "$(head -n 1 <<<"$stats")" = OK
tail -n +2 <<<"$stats" >"$dir/stats.json"
call "$leaf" /dctx.Admin/Stats | tail -n +2 >"$dir/leaf-stats.json"
timeout 60 "$rpcd" bench "$h1" /dctx.demo.Demo/Echo --concurrency 8 --calls 200 \
    >"$dir/bench.json" 2>/dev/null
check "rpcd bench ran" test -s "$dir/bench.json"
stop_servers # their logs whole: rpcd writes its lines in batches, and at exit
echo_ends=$(grep -c '"event":"call_end","method":"/dctx.demo.Demo/Echo","status":"OK"' "$dir/h.log")
check "no line lost to the batches or the exit: 202 Echo call_end lines, the hostile one, bench's probe and its 200 (got $echo_ends)" \
    test "$echo_ends" -eq 202

# ---- every JSON text parses, strictly --------------------------------------------------
for f in h.log leaf.log edge.log; do
    check "every line of $f is one strict JSON object" py '
bad = 0
for n, line in enumerate(lines(sys.argv[1]), 1):
    try:
        expect(isinstance(strict(line), dict), "not an object")
    except (ValueError, SystemExit) as e:
        bad += 1
        if bad <= 5:
            print("    line %d: %s: %r" % (n, e, line[:200]), file=sys.stderr)
if bad > 5:
    print("    ... and %d more" % (bad - 5), file=sys.stderr)
sys.exit(bad > 0)' "$dir/$f"
done
for f in stats.json leaf-stats.json bench.json; do
    check "$f is one strict JSON object" py '
expect(len(lines(sys.argv[1])) == 1, "not one line")
expect(isinstance(strict(lines(sys.argv[1])[0]), dict), "not an object")' "$dir/$f"
done

# ---- what the logs say ---------------------------------------------------------------
check "every line of each server's log carries its name, as given" py '
for path, i in ((sys.argv[1], 2), (sys.argv[3], 4)):
    names = {strict(l)["name"] for l in lines(path)}
    expect(names == {want(i)}, "%s: names %r, expected %r" % (path, names, want(i)))' \
    "$dir/h.log" "$evil_name" "$dir/leaf.log" "$leaf_name"
check "the serving line has one \"listen\" array with every URL, and a \"next\" array" py '
serving = [strict(l) for l in lines(sys.argv[1]) if strict(l)["event"] == "serving"]
expect(len(serving) == 1, "%d serving lines" % len(serving))
expect(serving[0]["listen"] == [want(2), want(3), want(4)], "listen: %r" % serving[0]["listen"])
expect(serving[0]["next"] == [want(5), want(6)], "next: %r" % serving[0]["next"])' \
    "$dir/h.log" "$h1" "$h2" "$h3" "$leaf" "$injected"
check "Fail's call_end has the message as sent, invalid bytes as U+FFFD (server and caller)" py '
for path in sys.argv[1], sys.argv[2]:
    ends = [strict(l) for l in lines(path) if b"/dctx.demo.Demo/Fail" in l and b"call_end" in l]
    expect(len(ends) == 1, "%s: %d Fail call_end lines" % (path, len(ends)))
    expect(ends[0]["status"] == "INTERNAL", "%s: status %r" % (path, ends[0]["status"]))
    expect(ends[0]["message"] == want(3), "%s: message %r" % (path, ends[0]["message"]))' \
    "$dir/h.log" "$dir/edge.log" "$fail_message"
check "the unknown method is logged by name, as given (server and caller)" py '
for path in sys.argv[1], sys.argv[2]:
    ends = [strict(l) for l in lines(path)]
    ends = [e for e in ends if e["event"] == "call_end" and e.get("method") == want(3)]
    expect(len(ends) == 1, "%s: %d call_end lines for the method" % (path, len(ends)))
    expect(ends[0]["status"] == "UNIMPLEMENTED", "%s: status %r" % (path, ends[0]["status"]))' \
    "$dir/h.log" "$dir/edge.log" "$evil_method"
check "the Chain that failed logs the hop URL in its message, unbroken" py '
ends = [strict(l) for l in lines(sys.argv[1])]
ends = [e for e in ends if e["event"] == "call_end" and e["method"] == "/dctx.demo.Demo/Chain"]
expect(len(ends) == 1, "%d Chain call_end lines" % len(ends))
expect(want(2) in ends[0]["message"], "message %r" % ends[0]["message"])' "$dir/h.log" "$injected"

# ---- what Stats says ---------------------------------------------------------------
check "Stats has no \"injected\" key, at any depth" py '
def keys(v):
    if isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from keys(x)
    elif isinstance(v, list):
        for x in v:
            yield from keys(x)
found = [k for k in keys(strict(lines(sys.argv[1])[0])) if "injected" in k]
expect(not found, "keys %r" % found)' "$dir/stats.json"
check "Stats names the instance as given, invalid bytes as U+FFFD" py '
for path, i in ((sys.argv[1], 2), (sys.argv[3], 4)):
    name = strict(lines(path)[0])["name"]
    expect(name == want(i), "%s: %r, expected %r" % (path, name, want(i)))' \
    "$dir/stats.json" "$evil_name" "$dir/leaf-stats.json" "$leaf_name"
check "Stats has every server counter, each cancel outcome and calls by status name" py '
s = strict(lines(sys.argv[1])[0])
for k in ("calls_received", "in_flight", "cancels_received", "cancels_pushed", "peers_lost",
          "calls_canceled_by_peer_loss", "bad_frames", "expired_in_queue",
          "connections_accepted", "accept_failures", "traces_dropped"):
    expect(type(s.get(k)) is int, "%s: %r" % (k, s.get(k)))
expect(isinstance(s.get("uptime_s"), float), "uptime_s: %r" % s.get("uptime_s"))
outcomes = ["none", "stopped", "prevented", "too_late", "pending", "unreached"]
expect(list(s["cancel_outcomes"]) == outcomes, "cancel_outcomes: %r" % s["cancel_outcomes"])
calls = s["calls"]
for code in ("OK", "INTERNAL", "UNAVAILABLE", "UNIMPLEMENTED", "DEADLINE_EXCEEDED"):
    expect(calls.get(code, 0) >= 1, "calls: %r, no %s" % (calls, code))
expect(list(s)[-1] == "next", "next is not the last key")' "$dir/stats.json"
check "Stats lists each next hop: its URL as given and every channel counter" py '
hops = strict(lines(sys.argv[1])[0])["next"]
expect([h["url"] for h in hops] == [want(2), want(3)], "urls %r" % [h["url"] for h in hops])
outcomes = ["none", "stopped", "prevented", "too_late", "pending", "unreached"]
for h in hops:
    for k in ("calls", "ok", "failed", "unavailable", "connections", "not_sent_budget",
              "cancels_pushed"):
        expect(type(h.get(k)) is int, "%s: %s: %r" % (h["url"], k, h.get(k)))
    expect(list(h["cancel_outcomes"]) == outcomes, "cancel_outcomes %r" % h["cancel_outcomes"])
    expect(isinstance(h["by_status"], dict), "by_status %r" % h.get("by_status"))
leaf, down = hops
expect(leaf["connected"] is True and leaf["calls"] >= 1 and leaf["ok"] >= 1, "leaf %r" % leaf)
expect(leaf["by_status"].get("OK", 0) == leaf["ok"], "leaf by_status %r" % leaf["by_status"])
expect(down["connected"] is False and down["connections"] == 0, "down hop %r" % down)' \
    "$dir/stats.json" "$leaf" "$injected"
check "bench's summary counts 200 OK calls" py '
b = strict(lines(sys.argv[1])[0])
expect(b["calls"] == 200 and b["by_status"] == {"OK": 200}, "%r" % b)' "$dir/bench.json"

# ---- strings too long for a log line ---------------------------------------------------
# A 4000-byte name (8 bytes each escaped pair) and a message of 1000 invalid
# bytes (6 each escaped) do not fit a line: cut, the lines stay valid and
# keep their event; Stats has the whole name.
long_name=$(printf '"\xff%.0s' $(seq 2000))
long_message=$(printf '\xfe%.0s' $(seq 1000))
long="ipc://$dir/long.ipc"
start "$long" --listen "$long" --name "$long_name" --log "$dir/long.log"
call "$long" /dctx.demo.Demo/Fail --data "ABORTED $long_message" >/dev/null
call "$long" /dctx.Admin/Stats | tail -n +2 >"$dir/long-stats.json"
stop_servers
check "lines with strings too long for them are strict JSON, cut, and keep their event" py '
ends = 0
for line in lines(sys.argv[1]):
    e = strict(line)
    expect(len(line) < 4096, "a line of %d bytes" % len(line))
    expect("event" in e and want(2).startswith(e["name"]) and len(e["name"]) < len(want(2)),
           "%r" % e)
    if e["event"] == "call_end" and e["method"] == "/dctx.demo.Demo/Fail":
        expect(e["status"] == "ABORTED" and want(3).startswith(e["message"]), "%r" % e)
        ends += 1
expect(ends == 1, "%d Fail call_end lines" % ends)
stats = strict(lines(sys.argv[4])[0])
expect(stats["name"] == want(2), "Stats name %r" % stats["name"][:40])' \
    "$dir/long.log" "$long_name" "$long_message" "$dir/long-stats.json"

# ---- a call where nothing listens names the cause ------------------------------------
nobody="ipc://$dir/nothing-listens.ipc"
out=$(call "$nobody" /dctx.demo.Demo/Echo --log "$dir/nobody.log"); rc=$?
check "a call where nothing listens is UNAVAILABLE (exit 14)" \
    test $rc -eq 14 -a "$(head -n 1 <<<"$out")" = UNAVAILABLE
reason=$(sed -n 2p <<<"$out")
check "... then names the cause: no connection to the URL (got \"$reason\")" \
    bash -c 'grep -q "connection" <<<"$1" && grep -qF "$2" <<<"$1"' _ "$reason" "$nobody"
check "... and its call_end log line says so too" py '
end = strict(lines(sys.argv[1])[-1])
expect(end["status"] == "UNAVAILABLE" and want(2) in end["message"], "%r" % end)' \
    "$dir/nobody.log" "$nobody"

echo "$failures failure(s)"
exit $((failures > 0))
