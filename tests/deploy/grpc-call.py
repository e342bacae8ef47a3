#!/usr/bin/python3
# grpc-call.py HOST:PORT METHOD DATA TIMEOUT_S [KEY=VALUE]... - one unary
# gRPC call with Python's grpcio (Debian's python3-grpcio, no stubs: the
# request and the reply are raw bytes), as a gRPC client outside the
# deployment would make it. test-compose.sh calls the gateway with it.
#
# Waits (10 s at most) for the channel to connect first, so that the call's
# own time is the call's. Prints:
#   CODE MS        the status (OK, DEADLINE_EXCEEDED, ...) and the call's
#                  time in milliseconds
#   HEX            the reply's bytes in hex ("-" if none)
#   TEXT...        the reply as text (OK) or the status details
# and exits 0; 2 on a usage error or when the channel never connects.
import sys
import time

import grpc


def main(argv):
    if len(argv) < 5:
        print("usage: grpc-call.py HOST:PORT METHOD DATA TIMEOUT_S [KEY=VALUE]...", file=sys.stderr)
        return 2
    target, method, data, timeout = argv[1], argv[2], argv[3].encode(), float(argv[4])
    metadata = []
    for kv in argv[5:]:
        key, sep, value = kv.partition("=")
        if not sep:
            print("grpc-call.py: %s: KEY=VALUE expected" % kv, file=sys.stderr)
            return 2
        metadata.append((key, value))
    with grpc.insecure_channel(target) as ch:
        try:
            grpc.channel_ready_future(ch).result(timeout=10)
        except grpc.FutureTimeoutError:
            print("grpc-call.py: %s: not connected within 10 s" % target, file=sys.stderr)
            return 2
        call = ch.unary_unary(method)
        t0 = time.monotonic()
        try:
            reply = call(data, timeout=timeout, metadata=metadata or None)
            code, text = grpc.StatusCode.OK, reply.decode("utf-8", "backslashreplace")
        except grpc.RpcError as e:
            reply, code, text = b"", e.code(), e.details() or ""
        ms = int((time.monotonic() - t0) * 1000)
    print(code.name, ms)
    print(reply.hex() or "-")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
