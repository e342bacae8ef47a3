"""Streams in flight through rpcd's gateway when rpcd is told to stop: one
read as it comes (Count), a client stream never half-closed (Sum), and one
never read (Count with no interval: its windows fill). Started here; the
test (test_grpc_gateway.sh) then SIGTERMs the instance, and this reports
how the two streams a caller waits on ended.

  streams_at_exit.py TARGET

Prints "ready" once all three flow, then one line of JSON:
{"count": [STATUS, MESSAGES], "sum": [STATUS, DETAILS]}.
"""
import json
import sys
import threading
import time

import grpc

channel = grpc.insecure_channel(sys.argv[1])
grpc.channel_ready_future(channel).result(timeout=10)
results = {}


def read_count():
    n = 0
    try:
        for _ in channel.unary_stream("/dctx.demo.Demo/Count")(b"100000 10ms"):
            n += 1
        results["count"] = ["OK", n]
    except grpc.RpcError as e:
        results["count"] = [e.code().name, n]


def never_half_close():
    def messages():
        yield b"1"
        time.sleep(60)
        yield b"2"

    try:
        call = channel.stream_stream("/dctx.demo.Demo/Sum")(messages())
        list(call)
        results["sum"] = ["OK", call.details()]
    except grpc.RpcError as e:
        results["sum"] = [e.code().name, e.details()]


def never_read():
    channel.unary_stream("/dctx.demo.Demo/Count")(b"100000 0ms")
    time.sleep(60)


threads = [threading.Thread(target=f, daemon=True)
           for f in (read_count, never_half_close, never_read)]
for t in threads:
    t.start()
time.sleep(0.5)
print("ready", flush=True)
for t in threads[:2]:
    t.join(timeout=30)
print(json.dumps(results), flush=True)
