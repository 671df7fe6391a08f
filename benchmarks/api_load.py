"""API load: searches from concurrent clients against a real index over loopback (a real uvicorn
started as `saedex serve` in a subprocess), with and without analyses running.

    python benchmarks/api_load.py --index demo                  # this checkout
    python benchmarks/api_load.py --index demo --repo ../old    # another checkout, same venv (the "before")

Phases (each against the same server, one run):
1. ``single``: one client, ``--single`` searches with distinct queries: the median is the
   latency a lone reviewer sees.
2. ``load``: ``--requests`` searches (default 400) with ``--requests`` *distinct* queries (no
   cache can answer them) from ``--clients`` (16) concurrent clients: errors, p50, p99.
3. ``idle8`` and ``analyses8`` (skipped with ``--no-analyses`` or against a server without
   jobs): 200 searches at 8 clients, first idle, then while 8 long analysis jobs
   (correlations over the whole index, defaults) are queued or running; ``/healthz`` is probed
   every 50 ms during the second and its latency reported. The goal: p99 with analyses <= 2x
   idle p99 and healthz within 50 ms.
Writes benchmarks/results/api_load[-LABEL].json.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import distinct_queries, percentiles, write_result  # noqa: E402

PROBE = """
import signal, sys, time, httpx
out = []
signal.signal(signal.SIGTERM, lambda *a: (print(" ".join(f"{x:.6f}" for x in out), flush=True), sys.exit(0)))
with httpx.Client(base_url=sys.argv[1], timeout=30) as h:
    while True:
        t = time.perf_counter()
        h.get("/healthz")
        out.append(time.perf_counter() - t)
        time.sleep(0.05)
"""


EXTRA: dict = {}  # fields added to every search body (--feedback)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until_serving(base: str, timeout_s: float = 120.0) -> None:
    """Until ``/healthz`` answers (the server loads its models first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{base} did not start within {timeout_s:.0f} s")


def fire(client: httpx.Client | list[httpx.Client], index: str, queries: list[str], clients: int, method: str) -> dict:
    """``queries`` as searches from ``clients`` concurrent connections; with a list of clients
    (one key each), query n goes out on client n mod their number."""
    pool = client if isinstance(client, list) else [client]

    def one(n_q: tuple[int, str]):
        n, q = n_q
        t = time.perf_counter()
        try:
            r = pool[n % len(pool)].post(f"/v1/indexes/{index}/search", json={"query": q, "k": 10, "method": method, **EXTRA})
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        return time.perf_counter() - t, ok

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        res = list(ex.map(one, enumerate(queries)))
    wall = time.perf_counter() - t0
    return {"requests": len(queries), "clients": clients, "errors": sum(not ok for _, ok in res),
            "throughput_rps": round(len(queries) / wall, 1), **percentiles([t for t, _ in res])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="demo")
    ap.add_argument("--feedback", type=int, default=None, help="send this feedback in every search body (default: the server's)")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--single", type=int, default=50)
    ap.add_argument("--method", default="sae")
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="checkout whose server to start")
    ap.add_argument("--label", default="", help="suffix of the result file (e.g. before)")
    ap.add_argument("--no-analyses", action="store_true")
    args = ap.parse_args()
    if args.feedback is not None:
        EXTRA["feedback"] = args.feedback
    port = free_port()
    # a capacity benchmark: every client is one key, so the per-key rate limit is off
    env = {**os.environ, "SAEDEX_API_KEYS": "bench-key-1,bench-key-2", "PYTHONPATH": args.repo, "SAEDEX_RATE_LIMIT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--log-level", "warning"],
                            cwd=args.repo, env=env)
    base = f"http://127.0.0.1:{port}"
    out: dict = {"index": args.index, "method": args.method, "repo": os.path.basename(os.path.abspath(args.repo)), "cpus": os.cpu_count()}
    try:
        wait_until_serving(base)
        client = httpx.Client(base_url=base, headers={"Authorization": "Bearer bench-key-1"}, timeout=120,
                              limits=httpx.Limits(max_connections=max(args.clients, 16)))
        client.post(f"/v1/indexes/{args.index}/search", json={"query": "warm-up: opens the index", "k": 10})
        out["single"] = fire(client, args.index, distinct_queries(args.single, 1000), 1, args.method)
        out["load"] = fire(client, args.index, distinct_queries(args.requests), args.clients, args.method)
        print(f"single p50 {out['single']['p50_ms']} ms; load p50 {out['load']['p50_ms']} p99 {out['load']['p99_ms']} ms, "
              f"errors {out['load']['errors']}", file=sys.stderr)
        jobs_api = client.get("/v1/jobs").status_code == 200
        if not args.no_analyses and jobs_api:
            out["idle8"] = fire(client, args.index, distinct_queries(200, 2000), 8, args.method)
            ids = []
            for i in range(8):  # from two keys: one key may hold at most half an index's job queue
                r = client.post(f"/v1/indexes/{args.index}/correlations", json={"min_support": 3 + i},
                                headers={"Authorization": f"Bearer bench-key-{1 + i % 2}"})
                ids.append(r.json()["id"])
            # /healthz is probed from a process of its own: probe threads inside this process
            # would also measure this process's 8 client threads competing for its GIL
            prober = subprocess.Popen([sys.executable, "-c", PROBE, base], stdout=subprocess.PIPE, text=True)
            out["analyses8"] = fire(client, args.index, distinct_queries(200, 3000), 8, args.method)
            prober.terminate()
            health = [float(x) for x in prober.communicate(timeout=30)[0].split()]
            states = [client.get(f"/v1/jobs/{j}").json()["status"] for j in ids]
            out["analyses8"]["jobs_still_active_after"] = sum(s in ("queued", "running") for s in states)
            out["healthz_during_analyses"] = percentiles(health) | {"max_ms": round(max(health) * 1000, 1)}
            out["analyses_p99_over_idle_p99"] = round(out["analyses8"]["p99_ms"] / out["idle8"]["p99_ms"], 2)
            for j in ids:
                client.delete(f"/v1/jobs/{j}")
    finally:
        proc.terminate()
        proc.wait(30)
    write_result("api_load" + (f"-{args.label}" if args.label else ""), out)


if __name__ == "__main__":
    main()
