"""Churn through rpcd's gRPC gateway with Python's grpcio (grpc.aio): N calls,
64 at a time, a third answered, a third timing out (5..30 ms on a 5 s
Sleep), a third canceled by the client (1..20 ms in). Every call must end
once with its expected status, and afterwards the gateway's counters
(rpcd's Stats) must show every call ended once, none in flight, and the
gateway's memory no larger than after the first quarter plus a margin.

  churn.py TARGET N RPCD DCTX_URL PID

Prints ok:/FAIL: per check; the exit status is the number of failures.
"""
import asyncio
import json
import os
import random
import subprocess
import sys
import time

import grpc

from checks import check, failures

target, total, rpcd, url, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
seed = int(os.environ.get("CHURN_SEED", time.time_ns() % 1000000))
print("churn seed", seed)
rng = random.Random(seed)


def rss_kib():
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stats():
    out = subprocess.run([rpcd, "call", url, "/dctx.Admin/Stats", "--timeout", "5s"],
                         capture_output=True, text=True, timeout=20).stdout
    return json.loads(next(line for line in out.split("\n") if line.startswith("{")))


async def one(i, echo, sleep, outcomes):
    kind = i % 3
    if kind == 0:
        call = echo(b"x" * 64, timeout=10)
    elif kind == 1:
        call = sleep(b"5s", timeout=rng.uniform(0.005, 0.030))
    else:
        call = sleep(b"5s", timeout=10)
        await asyncio.sleep(rng.uniform(0.001, 0.020))
        call.cancel()
    try:
        await call
    except (grpc.RpcError, asyncio.CancelledError):
        pass
    code = await call.code()
    want = [grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED][kind]
    outcomes[(kind, code == want)] = outcomes.get((kind, code == want), 0) + 1
    if code != want and outcomes[(kind, False)] <= 3:
        print("  call %d (kind %d) ended %s: %s" % (i, kind, code, await call.details()))


async def churn():
    rss = []
    outcomes = {}
    async with grpc.aio.insecure_channel(target) as channel:
        echo = channel.unary_unary("/dctx.demo.Demo/Echo")
        sleep = channel.unary_unary("/dctx.demo.Demo/Sleep")
        sem = asyncio.Semaphore(64)

        async def bounded(i):
            async with sem:
                await one(i, echo, sleep, outcomes)

        quarter = max(1, total // 4)
        for start in range(0, total, quarter):
            await asyncio.gather(*(bounded(i) for i in range(start, min(total, start + quarter))))
            rss.append(rss_kib())
    return outcomes, rss


t0 = time.monotonic()
outcomes, rss = asyncio.run(churn())
print("churn: %d calls in %.1f s, gateway RSS by quarter (KiB): %s"
      % (total, time.monotonic() - t0, rss))
for kind, name in enumerate(["answered", "timed out", "canceled"]):
    n = sum(v for (k, _), v in outcomes.items() if k == kind)
    bad = outcomes.get((kind, False), 0)
    check("churn: %d %s calls, each ended once with its status (%d not)" % (n, name, bad),
          bad == 0 and n == len(range(kind, total, 3)))

s = {}
for _ in range(100):  # the last calls' ends reach the counters within ms
    s = stats()
    if s["grpc"]["in_flight"] == 0 and s["in_flight"] == 1:
        break
    time.sleep(0.1)
g = s["grpc"]
check("churn: nothing in flight at the gateway, nor at the server but Stats (%d, %d)"
      % (g["in_flight"], s["in_flight"]), g["in_flight"] == 0 and s["in_flight"] == 1)
ended = sum(g["by_status"].values())
check("churn: the gateway ended each call it took once (%d taken, %d ended)"
      % (g["calls"], ended), ended == g["calls"] and total * 2 // 3 <= g["calls"] <= total)
# Every answered call started in dctx; a call whose budget or caller was
# gone first did not.
check("churn: one hand-off each way per call started in dctx (%d to dctx, %d back)"
      % (g["to_dctx"], g["to_grpc"]), g["to_dctx"] == g["to_grpc"] and g["to_dctx"] >= len(range(0, total, 3)))
if os.environ.get("DCTX_SANITIZED"):
    print("skip: memory bound under a sanitizer (its quarantine holds freed memory)")
else:
    check("churn: the gateway's memory stays bounded (%d KiB after a quarter, %d at the end)"
          % (rss[0], rss[-1]), rss[-1] <= rss[0] + 32 * 1024)
sys.exit(failures())
