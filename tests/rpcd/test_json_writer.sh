#!/usr/bin/env bash
# test_json_writer.sh JSON_SIZES - rpcd's JSON writer (rpcd/json.c) under
# every buffer size: json_sizes writes one hostile document into buffers
# from 1 byte up; each text must be strict JSON (Python's parser, no
# duplicate keys, valid UTF-8), a prefix of the whole document (members
# left out from the end, the last string cut on a character boundary), and
# the whole document once the buffer holds it.
set -uo pipefail
bin=${1:?usage: test_json_writer.sh path/to/json_sizes}
if ! command -v python3 >/dev/null; then
    echo "SKIP: python3 is needed to parse the JSON (scripts/lib/setup.sh installs it)"
    exit 77
fi
out=$(mktemp /tmp/dctx-json-sizes-XXXXXX)
trap 'rm -f "$out"' EXIT
if ! timeout 60 "$bin" >"$out"; then
    echo "FAIL: json_sizes failed (a write past its buffer, or a wrong length)"
    exit 1
fi
python3 - "$out" <<'PY'
import json, sys

hostile = (b'a"b\\c\n\t\x00\x01\x1f\x7f \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80'
           b' \xff \xc3 \xe0\x80\x80 \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82')
whole = {"s": hostile.decode("utf-8", "replace"), 'key "quoted"\n': "v",
         "n": -2**63, "u": 2**64 - 1, "t": True, "f": False, "x": 1.5, "inf": None,
         "null": "", "a": ["\u00e9\u20ac\U0001F600", {"k": "v"}, [], 7],
         "deep": [[[[[[[]]]]]]]}

def pairs(kv):
    keys = [k for k, _ in kv]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys")
    return dict(kv)

def no_constant(c):
    raise ValueError("not JSON: " + c)

def is_prefix(got, want):
    """got is want with members left out from the end, the last one maybe cut."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or list(got) != list(want)[:len(got)]:
            return False
        keys = list(got)
        return all(got[k] == want[k] for k in keys[:-1]) and (
            not keys or is_prefix(got[keys[-1]], want[keys[-1]]))
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) > len(want):
            return False
        return all(g == w for g, w in zip(got[:-1], want)) and (
            not got or is_prefix(got[-1], want[len(got) - 1]))
    if isinstance(want, str):
        return isinstance(got, str) and want.startswith(got)
    return type(got) is type(want) and got == want

failures = 0
texts = []
with open(sys.argv[1], "rb") as f:
    for line in f.read().split(b"\n")[:-1]:
        size, cut, text = line.split(b" ", 2)
        size = int(size)
        try:
            if size < 3 and text == b"":
                continue  # no room for even "{}"
            value = json.loads(text.decode("utf-8"), object_pairs_hook=pairs,
                               parse_constant=no_constant)
            if not is_prefix(value, whole):
                raise ValueError("not a prefix of the document: %r" % value)
            texts.append((size, text, value))
        except ValueError as e:
            print("FAIL: size %d: %s: %r" % (size, e, text[:300]))
            failures += 1
full = [t for t in texts if t[2] == whole]
if not full:
    print("FAIL: no size held the whole document")
    failures += 1
else:
    need = len(full[0][1]) + 1
    late = [t[0] for t in texts if t[0] >= need and t[1] != full[0][1]]
    if full[0][0] != need or late:
        print("FAIL: the whole document (%d bytes) first at size %d; differs at %r"
              % (need - 1, full[0][0], late))
        failures += 1
print("%s: %d sizes, each strict JSON and a prefix of the %d-byte document"
      % ("ok" if failures == 0 else "FAIL", len(texts), len(full[0][1]) if full else 0))
sys.exit(failures > 0)
PY
