#!/usr/bin/env bash
# test_rpcd_trace_html.sh RPCD - `rpcd trace --html FILE`, checked in a real
# browser: a call with a 200 ms deadline through three rpcd hops (a, b, c)
# is traced, the page of that trace is loaded by headless chromium, and the
# DOM it rendered must hold one row per span with the hop, method and
# status of the logs, in tree order, the markers of where the deadline
# struck and when each hop saw it; its screenshot must not be blank. The
# page must reference nothing outside itself, a log with markup in its
# strings must come out as text, and bad input must fail clearly. The
# terminal waterfall stays. Exits 77 when chromium or python3 is missing.
set -uo pipefail
rpcd=${1:?usage: test_rpcd_trace_html.sh path/to/rpcd}
test_name=trace_html
chromium=$(command -v chromium || command -v chromium-browser) || {
    echo "skip: chromium is needed (Debian package chromium)"
    exit 77
}
command -v python3 >/dev/null || { echo "skip: python3 is needed"; exit 77; }
# shellcheck source=tests/rpcd/lib.sh
. "$(dirname "$0")/lib.sh"
# chromium writes its profile under HOME; as root it needs --no-sandbox.
export HOME=$dir/home
mkdir -p "$HOME"
url() { echo "ipc://$dir/$1.ipc"; }

serve() { # name [next]
    local args=(serve --listen "$(url "$1")" --name "$1" --log "$dir/$1.log"
        --shutdown-grace 500ms)
    [ $# -gt 1 ] && args+=(--next "$(url "$2")")
    "$rpcd" "${args[@]}" &
    pids+=($!)
    for _ in $(seq 100); do
        call "$(url "$1")" /dctx.Admin/Stats --timeout 200ms >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    fail "rpcd $1 did not come up"
}
# browse FILE.html FLAG...: headless chromium on the page, bounded.
browse() {
    local page=$1
    shift
    timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --user-data-dir="$dir/chrome" \
        "$@" "file://$page" 2>>"$dir/chromium.err"
}

# --- a traced call through a, b and c that its deadline stops
serve c
serve b c
serve a b
out=$(call "$(url a)" /dctx.demo.Demo/Chain --data 5s --timeout 200ms --trace --log "$dir/edge.log")
rc=$?
check "the traced Chain call is DEADLINE_EXCEEDED (exit 4)" test $rc -eq 4
trace=$(sed -n 's/^trace: //p' <<<"$out")
check "--trace prints the trace id" test ${#trace} -eq 32
stop_servers # every log is whole
logs=("$dir"/a.log "$dir"/b.log "$dir"/c.log "$dir"/edge.log)

# --- the page
summary=$("$rpcd" trace "${logs[@]}" --trace-id "$trace" --html "$dir/t.html")
rc=$?
check "rpcd trace --html exits 0" test $rc -eq 0
check "... and says what it wrote: $summary" \
    test "$summary" = "wrote $dir/t.html: trace $trace, 4 spans"
check "the page references nothing outside itself (no http:, https:, src=, href=, url()" \
    bash -c "! grep -Eiq 'https?:|src=|href=|url\\(|@import|<script|<link' '$dir/t.html'"
start=$(date +%s%N)
browse "$dir/t.html" --dump-dom >"$dir/dom.html"
rc=$?
check "chromium rendered the page (exit $rc, $(( ($(date +%s%N) - start) / 1000000 )) ms)" \
    test $rc -eq 0 -a -s "$dir/dom.html"

# check_dom DOM TRACE LOG...: the rendered rows and markers against what
# the logs say. Prints a line per check; exits 1 if any failed.
check_dom() {
    python3 - "$@" <<'PY'
import json, sys
from html.parser import HTMLParser

dom_path, trace, logs = sys.argv[1], sys.argv[2], sys.argv[3:]
lines = []
for path in logs:
    for text in open(path, encoding="utf-8", errors="replace"):
        try:
            lines.append(json.loads(text))
        except ValueError:
            pass
spans = [l for l in lines if l.get("event") == "call_end" and l.get("trace_id") == trace]
t0 = min(l["ts"] - l["elapsed_us"] * 1000 for l in spans)
t1 = max(l["ts"] for l in spans)
hops = {l["name"] for l in spans}
cancels = [l for l in lines if l.get("event") in ("cancel_received", "cancel_pushed", "cancel_sent")
           and l["name"] in hops and t0 <= l["ts"] <= t1]
stopped = ("CANCELLED", "DEADLINE_EXCEEDED")

class Dom(HTMLParser):
    """The span rows (data- attributes, their markers), the strike lines,
    the page's title and main element, and every tag seen."""
    def __init__(self):
        super().__init__()
        self.rows, self.strikes, self.tags, self.stack = [], [], [], []
        self.main, self.title, self.in_title = {}, "", False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        self.tags.append(tag)
        self.in_title = tag == "title"
        if tag == "main":
            self.main = a
        if tag != "div":
            return
        self.stack.append(cls)
        if "row" in cls and "span" in cls:
            self.rows.append(dict(a, marks=[]))
        elif "mark" in cls and self.rows and any("span" in c for c in self.stack[:-1]):
            self.rows[-1]["marks"].append((cls[1], a.get("data-kind"), float(a["data-at-ms"])))
        elif "strike" in cls:
            self.strikes.append(float(a["data-at-ms"]))
    def handle_endtag(self, tag):
        self.in_title = False
        if tag == "div" and self.stack:
            self.stack.pop()
    def handle_data(self, data):
        if self.in_title:
            self.title += data

dom = Dom()
dom.feed(open(dom_path, encoding="utf-8").read())
failed = 0
def check(what, ok):
    global failed
    print(("ok: " if ok else "FAIL: ") + what)
    failed += not ok

want = sorted((l["name"], l["method"], l["status"]) for l in spans)
got = sorted((r.get("data-hop"), r.get("data-method"), r.get("data-status")) for r in dom.rows)
check("%d span rows in the DOM, one per call_end of the trace (%d)" % (len(dom.rows), len(spans)),
      len(dom.rows) == len(spans))
check("their hops, methods and statuses are the logs': %s" % got, got == want)
check("the title and main element name the trace and its span count",
      trace in dom.title and dom.main.get("data-trace-id") == trace
      and dom.main.get("data-spans") == str(len(spans)))
# The chain: the edge called a, a called b, b called c.
order = [(r["data-hop"], r["data-depth"]) for r in dom.rows]
check("rows in tree order, nested: %s" % order,
      order == [("rpcd-call", "0"), ("a", "1"), ("b", "2"), ("c", "3")])
check("some span ended CANCELLED or DEADLINE_EXCEEDED", any(l["status"] in stopped for l in spans))
for r in dom.rows:
    ends = [m for m in r["marks"] if m[:2] == ("seen", "end")]
    if r["data-status"] in stopped:
        check("%s's row marks when it saw the deadline (its end)" % r["data-hop"], len(ends) == 1)
for kind, mark in (("cancel_received", "seen"), ("cancel_pushed", "pushed")):
    for hop in sorted(hops):
        n_log = sum(1 for c in cancels if c["event"] == kind and c["name"] == hop)
        n_dom = sum(1 for r in dom.rows if r["data-hop"] == hop for m in r["marks"]
                    if m[:2] == (mark, kind))
        check("%s's row has its %d %s line(s) of the trace's time as markers (%d)"
              % (hop, n_log, kind, n_dom), n_log == n_dom)
struck = min([(l["ts"] - t0) / 1e6 for l in spans if l["status"] in stopped] +
             [(c["ts"] - t0) / 1e6 for c in cancels])
check("one line marks where the deadline struck: at +%.3f ms (%s)" % (struck, dom.strikes),
      len(dom.strikes) == 1 and abs(dom.strikes[0] - struck) < 0.002)
# Each span's deadline, as its call_start announced it. A marker is drawn
# where it falls inside the trace's time; under load a hop's deadline may
# fall after its end (a cancel from upstream, whose own deadline came
# first by the transit, ended it), and then none is drawn.
dues = {l["name"]: l["ts"] + l["deadline_in_us"] * 1000 for l in lines
        if l.get("event") == "call_start" and l.get("trace_id") == trace
        and "deadline_in_us" in l}
want_dues = {h: round((at - t0) / 1e6, 3) for h, at in dues.items() if t0 <= at <= t1}
got_dues = {r["data-hop"]: m[2] for r in dom.rows for m in r["marks"] if m[0] == "due"}
check("each row's deadline marker is drawn where its call_start put it, when inside the "
      "trace (%d of %d rows): %s" % (len(want_dues), len(dom.rows), got_dues),
      got_dues.keys() == want_dues.keys()
      and all(abs(got_dues[h] - want_dues[h]) < 0.002 for h in want_dues))
check("no script element in the DOM", "script" not in dom.tags)
sys.exit(failed > 0)
PY
}
check_dom "$dir/dom.html" "$trace" "${logs[@]}"
check "the DOM's rows are the logs' spans, with every marker" test $? -eq 0

# png_colors PNG: "WIDTH HEIGHT COLORS DEADLINE_RED_PIXELS" of an 8-bit,
# non-interlaced RGB or RGBA PNG, decoded with zlib alone (no PIL).
png_colors() {
    python3 - "$1" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
at, idat = 8, b""
while at < len(data):
    n, kind = struct.unpack(">I4s", data[at:at + 8])
    body = data[at + 8:at + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat += body
    at += 12 + n
assert depth == 8 and ctype in (2, 6) and interlace == 0, "unexpected PNG format"
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, colors, red = bytearray(stride), set(), 0
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], prev[i - bpp] if i >= bpp else 0
        if f == 1:
            line[i] = (line[i] + a) & 255
        elif f == 2:
            line[i] = (line[i] + b) & 255
        elif f == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        px = bytes(line[x:x + 3])
        colors.add(px)
        red += px == b"\xc0\x26\x2d"  # the DEADLINE_EXCEEDED bar
    prev = line
print(w, h, len(colors), red)
PY
}
rm -rf "$dir/chrome"
browse "$dir/t.html" --screenshot="$dir/shot.png" --window-size=1200,800 >/dev/null
check "chromium took a screenshot" test -s "$dir/shot.png"
read -r w h colors red < <(png_colors "$dir/shot.png" 2>&1) || true
check "the screenshot is 1200x800 (${w:-?}x${h:-?})" test "${w:-0}x${h:-0}" = 1200x800
check "... and not blank: ${colors:-?} colors" test "${colors:-0}" -gt 16
check "... with the DEADLINE_EXCEEDED bars drawn (${red:-?} pixels of their red)" \
    test "${red:-0}" -gt 1000

# --- the terminal waterfall stays
wf=$("$rpcd" trace "${logs[@]}" --trace-id "$trace")
check "without --html, the terminal waterfall: 4 spans, nested" \
    bash -c "grep -q '^trace $trace: 4 spans' <<<'$wf' && grep -q '^      c ' <<<'$wf'"
check "rpcd trace --help tells of --html" bash -c "'$rpcd' trace --help | grep -q -- '--html FILE'"

# --- hostile strings in a log come out as text; a line too long for the
# reader is skipped whole, and the line after it is read
mkdir -p "$dir/hostile"
hostile=$dir/hostile/h.log
t2=44444444444444444444444444444444
python3 - "$hostile" "$t2" <<'PY'
import json, sys
path, trace = sys.argv[1], sys.argv[2]
def line(**kw):
    return json.dumps(dict(kw), separators=(",", ":"), ensure_ascii=False) + "\n"
with open(path, "w", encoding="utf-8") as f:
    f.write(line(ts=5000000000, name="<img src=x onerror=alert(2)>", event="call_end",
                 method="<script>alert(1)</script>", status="\"><script>alert(3)</script>",
                 elapsed_us=1000, trace_id=trace, span_id="aaaaaaaaaaaaaaaa",
                 message="it's \"quoted\" & <b>bold</b>"))
    # One line of 20000 bytes whose tail would read as a span.
    f.write("x" * 20000 + line(ts=5000000000, name="forged", event="call_end", method="/f",
                               status="OK", elapsed_us=10, trace_id=trace,
                               span_id="ffffffffffffffff"))
    f.write(line(ts=4999800000, name="h'2", event="call_end", method="/m/" + "é" * 300,
                 status="CANCELLED", elapsed_us=500, trace_id=trace, span_id="bbbbbbbbbbbbbbbb",
                 parent_span_id="aaaaaaaaaaaaaaaa"))
    f.write(line(ts=4999600000, name="h'2", event="cancel_received", cause="CANCELLED",
                 cause_message="<script>alert(4)</script>", outcome="stopped"))
    # Times no clock gives, in a trace of their own: nothing may overflow.
    for n, (ts, us) in enumerate([(10**30, -5), (1, 9 * 10**18), (-(10**30), 10**30),
                                  (2**62, 2**62)]):
        f.write(line(ts=ts, name="t%d" % n, event="call_start", method="/t", deadline_in_us=us,
                     trace_id="5" * 32, span_id="%016d" % n))
        f.write(line(ts=ts, name="t%d" % n, event="call_end", method="/t", status="OK",
                     elapsed_us=us, trace_id="5" * 32, span_id="%016d" % n))
PY
out=$("$rpcd" trace "$hostile" --trace-id "$t2" --html "$dir/h.html")
check "a hostile log gives a page of 2 spans (the overlong line skipped): $out" \
    test "$out" = "wrote $dir/h.html: trace $t2, 2 spans"
check "... with its markup escaped in the file" \
    bash -c "! grep -Eiq '<(script|img)' '$dir/h.html' &&
             grep -q '&lt;script&gt;alert(1)' '$dir/h.html'"
"$rpcd" trace "$hostile" --trace-id 55555555555555555555555555555555 >"$dir/t5.txt"
rc=$?
check "times past any clock's: the terminal waterfall draws them (exit $rc)" \
    bash -c "test $rc -eq 0 && grep -q '^trace 5*: 4 spans' '$dir/t5.txt'"
out=$("$rpcd" trace "$hostile" --trace-id 55555555555555555555555555555555 --html "$dir/t5.html")
check "... and so does the page: $out" grep -q ', 4 spans$' <<<"$out"
browse "$dir/h.html" --dump-dom >"$dir/h-dom.html"
check "... and no script or img element in the rendered DOM" \
    bash -c "test -s '$dir/h-dom.html' && ! grep -Eiq '<(script|img)' '$dir/h-dom.html'"
check "... where the strings show as text, whole" python3 - "$dir/h-dom.html" <<'PY'
import sys
from html.parser import HTMLParser
class Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows = []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "span" in (a.get("class") or "").split():
            self.rows.append(a)
p = Rows()
p.feed(open(sys.argv[1], encoding="utf-8").read())
hops = [r["data-hop"] for r in p.rows]
methods = [r["data-method"] for r in p.rows]
print(hops, [m[:30] for m in methods])
sys.exit(not (hops == ["<img src=x onerror=alert(2)>", "h'2"]
              and methods[0] == "<script>alert(1)</script>"
              and methods[1].startswith("/m/éé") and len(methods[1]) < 130))
PY

# --- clear errors for bad input
err=$("$rpcd" trace "$dir/none.log" --html "$dir/x.html" 2>&1 >/dev/null)
rc=$?
check "an unreadable log: exit 64, said ($err)" \
    bash -c "test $rc -eq 64 && grep -q 'cannot read' <<<'$err' && test ! -e '$dir/x.html'"
err=$("$rpcd" trace "${logs[@]}" --trace-id 00000000000000000000000000000000 \
    --html "$dir/x.html" 2>&1 >/dev/null)
rc=$?
check "no such trace: an error exit ($rc), said ($err)" \
    bash -c "test $rc -ne 0 && grep -q 'no trace' <<<'$err' && test ! -e '$dir/x.html'"
err=$("$rpcd" trace "${logs[@]}" --html "$dir/no/such/dir/x.html" 2>&1 >/dev/null)
rc=$?
check "a page that cannot be written: exit 64, said ($err)" \
    bash -c "test $rc -eq 64 && grep -q 'cannot write' <<<'$err'"
if [ -w /dev/full ]; then
    err=$("$rpcd" trace "${logs[@]}" --html /dev/full 2>&1 >/dev/null)
    rc=$?
    check "a full disk: exit 64, said ($err)" \
        bash -c "test $rc -eq 64 && grep -q 'cannot write' <<<'$err'"
fi
"$rpcd" trace "${logs[@]}" --html >/dev/null 2>&1
check "--html without a file is a usage error (exit 64)" test $? -eq 64

echo "$failures failure(s)"
exit $((failures > 0))
