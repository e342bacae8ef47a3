"""A gRPC server of Python's grpcio (Debian's python3-grpcio) for any method,
with no generated stubs: the peer that dctx's outbound gRPC calls meet.

  py_server.py PORT REPORT_FILE [--tls CERT KEY [CLIENT_CA]]

Prints "listening PORT" once it serves. Each call appends JSON lines to
REPORT_FILE: {"event":"call", "method", "remaining_ms", "metadata", "request"}
at its start ("-bin" values as base64; with --tls also "peer_cn", the common
name of the certificate the caller presented, or null), then {"event":"ended", "err",
"after_ms"} if the caller canceled it or its deadline passed. The request
says what to do: "sleep DURATION" (5s, 300ms) waits, "status CODE message"
answers that status, anything else is echoed back after "python:".
/dctx.demo.Demo/Count streams as rpcd's does ("N INTERVAL": "1" .. "N").
"""
import base64
import json
import re
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

lock = threading.Lock()


def report(path, obj):
    with lock, open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def seconds(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", text)
    if m is None:
        return None
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def handler_for(path, method):
    def handle(request, context):
        start = time.monotonic()
        md = {}
        for k, v in context.invocation_metadata():
            if k.endswith("-bin"):
                v = base64.b64encode(v).decode()
            md.setdefault(k, []).append(v)
        left = context.time_remaining()
        cn = context.auth_context().get("x509_common_name")
        report(path, {"event": "call", "method": method,
                      "remaining_ms": None if left is None or left > 1e9 else left * 1000,
                      "metadata": md, "request": request.decode("utf-8", "replace"),
                      "peer_cn": cn[0].decode() if cn else None})
        ended = threading.Event()

        def on_end():
            if ended.is_set():
                return
            ended.set()
            left = context.time_remaining()
            err = "deadline" if left is not None and left <= 0.002 else "canceled"
            report(path, {"event": "ended", "method": method, "err": err,
                          "after_ms": (time.monotonic() - start) * 1000})

        text = request.decode("utf-8", "replace")
        if text.startswith("sleep "):
            context.add_callback(on_end)
            wait = seconds(text[6:])
            if wait is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sleep takes 300ms or 5s")
            ended.wait(wait)
            if ended.is_set() or not context.is_active():
                return b""
            ended.set()
            return b"python:slept"
        if text.startswith("status "):
            code, _, message = text[7:].partition(" ")
            code = int(code)
            if code == 0:
                return b"python:ok"
            status = next(s for s in grpc.StatusCode if s.value[0] == code)
            context.abort(status, message)
        return b"python:" + request

    return grpc.unary_unary_rpc_method_handler(handle)


def count_handler(path):
    """/dctx.demo.Demo/Count as rpcd serves it: "N INTERVAL" -> "1" .. "N"."""
    def handle(request, context):
        start = time.monotonic()
        text = request.decode("utf-8", "replace")
        report(path, {"event": "call", "method": "/dctx.demo.Demo/Count", "request": text,
                      "metadata": {k: [v] for k, v in context.invocation_metadata()
                                   if not k.endswith("-bin")}})
        n, _, every = text.partition(" ")
        wait = seconds(every) or 0
        stopped = threading.Event()

        def on_end():
            if not stopped.is_set():
                stopped.set()
                report(path, {"event": "ended", "method": "/dctx.demo.Demo/Count",
                              "err": "canceled", "after_ms": (time.monotonic() - start) * 1000})

        context.add_callback(on_end)
        for i in range(1, int(n) + 1):
            if i > 1 and stopped.wait(wait):
                return
            yield str(i).encode()
        stopped.set()

    return grpc.unary_stream_rpc_method_handler(handle)


class AnyMethod(grpc.GenericRpcHandler):
    def __init__(self, path):
        self.path = path

    def service(self, details):
        if details.method == "/dctx.demo.Demo/Count":
            return count_handler(self.path)
        return handler_for(self.path, details.method)


def main():
    port, path = sys.argv[1], sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((AnyMethod(path),))
    if sys.argv[3:4] == ["--tls"]:
        read = lambda f: open(f, "rb").read()
        ca = read(sys.argv[6]) if len(sys.argv) > 6 else None
        creds = grpc.ssl_server_credentials([(read(sys.argv[5]), read(sys.argv[4]))],
                                            root_certificates=ca,
                                            require_client_auth=ca is not None)
        server.add_secure_port("127.0.0.1:" + port, creds)
    else:
        server.add_insecure_port("127.0.0.1:" + port)
    server.start()
    print("listening", port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
