"""grpc.health.v1.Health/Watch as gRPC's own clients call it (Python's
grpcio, no generated stubs): prints each status the stream sends, one per
line as it comes, then "end CODE" when the stream ends.

  health_watch.py HOST:PORT [SERVICE] [SECONDS]

SECONDS (default 30) bounds the watch: the stream then ends
DEADLINE_EXCEEDED at the client.
"""
import sys

import grpc

NAMES = {1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def request(service):
    name = service.encode()
    return b"" if not name else b"\x0a" + bytes([len(name)]) + name


def main():
    target = sys.argv[1]
    service = sys.argv[2] if len(sys.argv) > 2 else ""
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 30
    watch = grpc.insecure_channel(target).unary_stream("/grpc.health.v1.Health/Watch")
    stream = watch(request(service), timeout=seconds)
    try:
        for m in stream:
            status = m[1] if len(m) == 2 and m[0] == 0x08 else None
            print(NAMES.get(status, repr(m)), flush=True)
        print("end OK", flush=True)
    except grpc.RpcError as e:
        print("end", e.code().name, flush=True)


if __name__ == "__main__":
    main()
