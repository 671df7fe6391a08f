"""API load: 400 searches from 16 concurrent clients against a real index, over loopback.

    python benchmarks/api_load.py --index demo [--requests 400 --clients 16]

Starts `saedex serve` in a subprocess (a real uvicorn), waits for /healthz, fires the searches
(SAE method, no LLM; queries rotate over a fixed list) and reports p50/p99 latency, throughput
and errors. Writes benchmarks/results/api_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result, percentiles  # noqa: E402

QUERIES = ["direct quotes from people", "numbers and statistics", "an apology", "questions", "sports results",
           "government policy", "a product launch", "film and music", "a warning about risks", "optimistic outlook"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="demo")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--method", default="sae")
    args = ap.parse_args()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {**os.environ, "SAEDEX_API_KEYS": "bench-key"}
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--log-level", "warning"],
                            cwd=Path(__file__).resolve().parents[1], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = {"Authorization": "Bearer bench-key"}
        client = httpx.Client(base_url=base, headers=headers, timeout=60, limits=httpx.Limits(max_connections=args.clients))
        client.post(f"/v1/indexes/{args.index}/search", json={"query": QUERIES[0], "k": 10})  # opens the index

        def one(i: int):
            t = time.perf_counter()
            try:
                r = client.post(f"/v1/indexes/{args.index}/search", json={"query": QUERIES[i % len(QUERIES)], "k": 10, "method": args.method})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            return time.perf_counter() - t, ok

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as ex:
            res = list(ex.map(one, range(args.requests)))
        wall = time.perf_counter() - t0
        out = {"index": args.index, "method": args.method, "requests": args.requests, "clients": args.clients,
               "errors": sum(not ok for _, ok in res), "throughput_rps": round(args.requests / wall, 1),
               **percentiles([t for t, _ in res])}
    finally:
        proc.terminate()
        proc.wait(10)
    write_result("api_load", out)


if __name__ == "__main__":
    main()
