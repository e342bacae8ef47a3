"""Python's grpcio (Debian's python3-grpcio) calling dctx through rpcd's
gRPC gateway: deadline, cancel, metadata, every status, unknown methods,
health. The setup (tests/grpc/test_grpc_gateway.sh): instance a takes gRPC
on TARGET and runs Chain on to instance b; both log to LOGDIR/{a,b}.log.

  gateway_cases.py TARGET LOGDIR

Prints ok:/FAIL: per check; the exit status is the number of failures.
"""
import json
import sys
import time

import grpc

from checks import check, failures

target, logdir = sys.argv[1], sys.argv[2]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = "00-%s-b7ad6b7169203331-01" % TRACE_ID
CODES = {s.value[0]: s for s in grpc.StatusCode}


def log_lines(name):
    with open("%s/%s.log" % (logdir, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_lines(name, pred, n=1, seconds=5.0):
    """The log lines of instance name for which pred holds, once there are
    n of them (rpcd writes its log in batches), or what there is after
    seconds."""
    end = time.monotonic() + seconds
    while True:
        found = [l for l in log_lines(name) if pred(l)]
        if len(found) >= n or time.monotonic() > end:
            return found
        time.sleep(0.05)


channel = grpc.insecure_channel(target)
chain = channel.unary_unary("/dctx.demo.Demo/Chain")
grpc.channel_ready_future(channel).result(timeout=10)

# 1. A 200 ms timeout on a chain that would sleep 5 s.
t0 = time.time_ns()
try:
    chain(b"5s", timeout=0.2, metadata=[("x-case", "deadline")])
    check("deadline: DEADLINE_EXCEEDED", False, "the call succeeded")
except grpc.RpcError as e:
    took_ms = (time.time_ns() - t0) / 1e6
    check("deadline: DEADLINE_EXCEEDED", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.code())
    check("deadline: within a few ms of 200 ms (%.1f ms)" % took_ms, 195 <= took_ms <= 260)
deadline_ns = t0 + 200_000_000
ends = wait_lines("b", lambda l: l.get("event") == "call_end"
                  and l.get("method") == "/dctx.demo.Demo/Chain" and l["ts"] > t0)
check("deadline: the last hop's handler ended DEADLINE_EXCEEDED",
      len(ends) == 1 and ends[0]["status"] == "DEADLINE_EXCEEDED", ends)
starts = wait_lines("b", lambda l: l.get("event") == "call_start" and l["ts"] > t0)
# The gateway learns the deadline as gRPC's C core computed it, from the
# moment it read the headers, after the caller's transit (rpcd keeps 2 ms
# back for it). On a loaded machine that read comes late by more (7 ms
# seen with the suite running two tests at once), so the instant is
# printed, not checked: what is checked is that the last hop got less
# budget than the caller gave and ended DEADLINE_EXCEEDED.
if starts:
    hop_deadline_ns = starts[0]["ts"] + starts[0]["deadline_in_us"] * 1000
    print("info: the last hop's deadline came %.2f ms before the client's"
          % ((deadline_ns - hop_deadline_ns) / 1e6))
    check("deadline: the last hop got less budget than the client's 200 ms (%d us)"
          % starts[0]["deadline_in_us"], 0 < starts[0]["deadline_in_us"] < 200_000)

# 2. A cancel 100 ms after the call began.
t0 = time.time_ns()
future = chain.future(b"5s", timeout=5)
time.sleep(0.1)
canceled_ns = time.time_ns()
future.cancel()
check("cancel: the client sees CANCELLED", future.cancelled())
for hop in ("a", "b"):
    ends = wait_lines(hop, lambda l: l.get("event") == "call_end"
                      and l.get("method") == "/dctx.demo.Demo/Chain" and l["ts"] > t0)
    late = (ends[0]["ts"] - canceled_ns) / 1e6 if ends else None
    check("cancel: hop %s's handler ended CANCELLED" % hop,
          len(ends) == 1 and ends[0]["status"] == "CANCELLED", ends)
    if ends:
        check("cancel: ... %.2f ms after the cancel" % late, -1 < late < 50)
ends = wait_lines("a", lambda l: l.get("event") == "grpc_call_end" and l["ts"] > t0)
check("cancel: the gateway reports the caller's cancel",
      len(ends) == 1 and ends[0].get("canceled_by_caller") == "CANCELLED", ends)

# 3. Metadata: the trace keys and the forwarded key reach the last hop, the
# rest stay at the gateway; a -bin key carries bytes.
t0 = time.time_ns()
reply = chain(b"0s", timeout=5, metadata=[
    ("traceparent", TRACEPARENT), ("tracestate", "vendor=x"), ("baggage", "user=ann,tier=gold"),
    ("x-custom", "c1"), ("x-custom", "c2"), ("x-blob-bin", b"\x00\x01\xff"),
    ("x-other", "stays")])
lines = reply.split(b"\n")
check("metadata: baggage reached the last hop", b"baggage=user=ann,tier=gold" in lines, reply)
check("metadata: tracestate reached the last hop", b"tracestate=vendor=x" in lines, reply)
check("metadata: a repeated key arrives joined", b"x-custom=c1,c2" in lines, reply)
check("metadata: a -bin key arrives as its bytes", b"x-blob-bin=\x00\x01\xff" in lines, reply)
check("metadata: a key not listed stays at the edge", not any(b"x-other" in l for l in lines))
tp = [l for l in lines if l.startswith(b"traceparent=")]
check("metadata: the trace id reaches the last hop",
      len(tp) == 1 and tp[0].split(b"-")[1].decode() == TRACE_ID, tp)
ends = wait_lines("b", lambda l: l.get("event") == "call_end" and l["ts"] > t0)
check("metadata: the last hop's log has the client's trace id",
      len(ends) == 1 and ends[0].get("trace_id") == TRACE_ID, ends)
try:
    chain(b"0s", timeout=5, metadata=[("baggage", "b" * 5000), ("x-custom", "c" * 5000)])
    check("metadata: values over 8192 bytes refused", False, "the call succeeded")
except grpc.RpcError as e:
    check("metadata: values over 8192 bytes: RESOURCE_EXHAUSTED naming the limit",
          e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "8192" in e.details(), e.details())
try:
    chain(b"0s", timeout=5, metadata=[("x-blob-bin", b"a"), ("x-blob-bin", b"b")])
    check("metadata: a -bin key given twice refused", False, "the call succeeded")
except grpc.RpcError as e:
    check("metadata: a -bin key given twice: INVALID_ARGUMENT",
          e.code() == grpc.StatusCode.INVALID_ARGUMENT and "twice" in e.details(), e.details())

# 4. Every status code and a UTF-8 message, from the last dctx hop back.
fail = channel.unary_unary("/dctx.demo.Demo/Fail")
message = "héllo ✓ 100% done"
for code in range(1, 17):
    try:
        fail(("%s %s" % (CODES[code].name, message)).encode(), timeout=5)
        check("status %s" % CODES[code].name, False, "the call succeeded")
    except grpc.RpcError as e:
        check("status %s and its UTF-8 message" % CODES[code].name,
              e.code() == CODES[code] and e.details() == message, (e.code(), e.details()))
check("status OK", fail(b"OK fine", timeout=5) == b"")

# A request and its reply compressed with gzip (grpc-encoding): the C core
# inflates what the gateway reads; dctx sees the plain bytes.
echo = channel.unary_unary("/dctx.demo.Demo/Echo")
big = b"gzip me " * 2000
check("a gzip-compressed request through the gateway comes back whole",
      echo(big, timeout=5, compression=grpc.Compression.Gzip) == big)

# 5. An unknown method, and health.
try:
    channel.unary_unary("/no.Such/Method")(b"", timeout=5)
    check("unknown method", False, "the call succeeded")
except grpc.RpcError as e:
    check("unknown method: UNIMPLEMENTED", e.code() == grpc.StatusCode.UNIMPLEMENTED, e.code())
health = channel.unary_unary("/grpc.health.v1.Health/Check")
check("health: SERVING", health(b"", timeout=5) == b"\x08\x01")
try:
    health(b"\x0a\x03foo", timeout=5)
    check("health: an unknown service", False, "the call succeeded")
except grpc.RpcError as e:
    check("health: an unknown service is NOT_FOUND", e.code() == grpc.StatusCode.NOT_FOUND)

# 6. Streams through the gateway: a server stream read and canceled mid-way
# (Count at a relays from b: both handlers must see the cancel), a
# bidirectional one, a client stream.
count = channel.unary_stream("/dctx.demo.Demo/Count")
check("stream: Count 5 arrives whole, in order",
      list(count(b"5 5ms", timeout=5)) == [b"1", b"2", b"3", b"4", b"5"])
t0 = time.time_ns()
it = count(b"1000 10ms", timeout=10)
got = []
for m in it:
    got.append(m)
    if len(got) == 3:
        canceled_ns = time.time_ns()
        it.cancel()
        break
check("stream: 3 messages read before the cancel", got == [b"1", b"2", b"3"], got)
for hop in ("a", "b"):
    ends = wait_lines(hop, lambda l: l.get("event") == "stream_end" and l["ts"] > t0)
    check("stream: hop %s's Count handler ended CANCELLED" % hop,
          len(ends) == 1 and ends[0]["status"] == "CANCELLED", ends)
    if ends:
        late = (ends[0]["ts"] - canceled_ns) / 1e6
        check("stream: ... %.2f ms after the cancel" % late, -1 < late < 50)
echo_stream = channel.stream_stream("/dctx.demo.Demo/EchoStream")
check("stream: EchoStream echoes each message",
      list(echo_stream(iter([b"a", b"b", b"c"]), timeout=5)) == [b"a", b"b", b"c"])
sum_it = channel.stream_stream("/dctx.demo.Demo/Sum")(iter([b"1", b"2", b"39"]), timeout=5)
check("stream: Sum answers in its status message", list(sum_it) == [] and sum_it.details() == "42",
      sum_it.details())
# A client stream canceled mid-way: its dctx handler ends CANCELLED,
# never OK on a cut input.
def two_then_wait():
    yield b"1"
    yield b"2"
    time.sleep(1)
    yield b"3"


t0 = time.time_ns()
cut = channel.stream_stream("/dctx.demo.Demo/Sum")(two_then_wait(), timeout=5)
time.sleep(0.2)
cut.cancel()
ends = wait_lines("a", lambda l: l.get("event") == "stream_end" and l.get("method") ==
                  "/dctx.demo.Demo/Sum" and l["ts"] > t0)
check("stream: a client stream canceled mid-way ends its handler CANCELLED",
      len(ends) == 1 and ends[0]["status"] == "CANCELLED", ends)
empty = channel.stream_stream("/dctx.demo.Demo/Sum")(iter([]), timeout=5)
check("stream: a client stream of no message sums to 0", list(empty) == [] and empty.details() == "0",
      empty.details())
try:
    list(count(b"1000 10ms", timeout=0.15))
    check("stream: a deadline ends a stream", False, "it ended OK")
except grpc.RpcError as e:
    check("stream: a 150 ms deadline ends Count DEADLINE_EXCEEDED",
          e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.code())

sys.exit(failures())
