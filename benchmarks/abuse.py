"""Abuse: the cost attacks of the hardening probe, replayed against a real server, while honest
clients search. Reports what the honest clients see.

    python benchmarks/abuse.py                 # builds a 250-document BBC index "abuse" if missing
    python benchmarks/abuse.py --index demo

One server (`saedex serve` in a subprocess at the default per-key rate limit, keys file with the
attacker's search-only and analyses keys and one search key per honest client; an LLM configured at a local fake endpoint that stalls past its 5 s timeout).
Phases, one run:
1. ``idle``: ``--searches`` distinct searches from 8 clients; ``/healthz`` probed every 50 ms.
2. ``attack``: the same number of other distinct searches from 8 clients while attackers run:
   - float filters: search-role clients sending the costliest filters a request may hold (and
     the 1,000-float filter of the probe, which must be refused);
   - ``latents?top=20000`` (must be refused) and the largest page allowed, ``top=200``;
   - heavy correlations (per_doc 4096, max_docs 0, min_support 1, min_npmi -1, max_freq 1,
     floor 0, max_label_sim 1, top 1000) submitted again and again, and cancelled;
   - LLM stalls: searches with ``expand`` and ``rerank`` against the stalling endpoint.
Goals (issue 24): attack p99 <= 2x idle p99, ``/healthz`` max <= 50 ms, server RSS growth <= 500 MB.
Writes benchmarks/results/abuse.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.api_load import PROBE, fire, free_port, wait_until_serving  # noqa: E402
from tests.llm_stub import chat_answer, json_endpoint  # noqa: E402
from benchmarks.common import distinct_queries, percentiles, write_result  # noqa: E402

N_HONEST = 8  # honest clients, each a reviewer with a key of their own
KEYS = {"search": "abuse-search-key-1", "analyses": "abuse-analyses-key-1", "admin": "abuse-admin-key-1",
        **{f"honest{n}": f"honest-reviewer-key-{n}" for n in range(N_HONEST)}}  # the attacker holds the first two
ROLES = {"search": "search", "analyses": "analyses", "admin": "admin", **{f"honest{n}": "search" for n in range(N_HONEST)}}
HEAVY_CORRELATIONS = {"per_doc": 4096, "max_docs": 0, "min_support": 1, "min_npmi": -1, "max_freq": 1, "floor": 0,
                      "max_label_sim": 1, "top": 1000}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ensure_index(name: str, n_per_topic: int = 50) -> None:
    from indexer.store import list_indexes

    if name in list_indexes(None):
        return
    from tests.conftest import load_bbc, write_jsonl

    path = write_jsonl(Path(tempfile.mkdtemp()) / f"{name}.jsonl", load_bbc(n_per_topic, seed=11))
    subprocess.run([sys.executable, "-m", "server.cli", "index", str(path), "--index", name, "--id-field", "id", "--quiet"],
                   cwd=ROOT, check=True)


class Attackers:
    """Threads repeating each attack until stopped; counts the answers' status codes."""

    def __init__(self, base: str, index: str):
        self.base, self.index = base, index
        self.stop = threading.Event()
        self.codes: dict[str, Counter] = {}
        self.threads: list[threading.Thread] = []

    def _loop(self, name: str, key: str, step) -> None:
        codes = self.codes.setdefault(name, Counter())
        with httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {KEYS[key]}"}, timeout=60) as c:
            n = 0
            while not self.stop.is_set():
                try:
                    codes[str(step(c, n))] += 1
                except httpx.HTTPError as e:
                    codes[type(e).__name__] += 1
                n += 1

    def start(self, name: str, key: str, step, copies: int = 1) -> None:
        for _ in range(copies):
            t = threading.Thread(target=self._loop, args=(name, key, step), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self) -> dict:
        self.stop.set()
        for t in self.threads:
            t.join(90)
        return {k: dict(v) for k, v in self.codes.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="abuse")
    ap.add_argument("--searches", type=int, default=200)
    ap.add_argument("--only", default="", help="comma-separated attacks to run (default: all)")
    ap.add_argument("--each", action="store_true", help="a phase per attack before the phase with all of them")
    ap.add_argument("--rate", type=float, default=20.0, help="SAEDEX_RATE_LIMIT of the server (requests a second per key)")
    args = ap.parse_args()
    ensure_index(args.index)

    llm = json_endpoint(200, chat_answer("{}"), delay=30.0)  # answers after the 5 s timeout: a stalled endpoint
    keys_file = Path(tempfile.mkdtemp()) / "keys.json"
    keys_file.write_text(json.dumps({"keys": [{"id": name, "sha256": hashlib.sha256(k.encode()).hexdigest(), "role": ROLES[name]}
                                              for name, k in KEYS.items()]}))
    keys_file.chmod(0o600)
    port = free_port()
    env = {**os.environ, "SAEDEX_KEYS_FILE": str(keys_file), "PYTHONPATH": str(ROOT), "OPENAI_BASE_URL": f"http://127.0.0.1:{llm.server_port}/v1",
           "OPENAI_API_KEY": "sk-fake", "SAEDEX_LLM_MODEL": "stalling", "SAEDEX_LLM_TIMEOUT": "5"}
    env.pop("SAEDEX_API_KEYS", None)
    env["SAEDEX_RATE_LIMIT"] = str(args.rate)
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--log-level", "warning",
                             "--audit-log", ""], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    out: dict = {"index": args.index, "cpus": os.cpu_count()}
    try:
        wait_until_serving(base)
        honest = [httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEYS[f'honest{n}']}"}, timeout=120)
                  for n in range(N_HONEST)]
        honest[0].post(f"/v1/indexes/{args.index}/search", json={"query": "warm-up: opens the index", "k": 10})
        rss0 = rss_mb(proc.pid)

        def phase(offset: int) -> tuple[dict, dict]:
            prober = subprocess.Popen([sys.executable, "-c", PROBE, base], stdout=subprocess.PIPE, text=True)
            res = fire(honest, args.index, distinct_queries(args.searches, offset), len(honest), "sae")
            prober.terminate()
            health = [float(x) for x in prober.communicate(timeout=30)[0].split()]
            return res, percentiles(health) | {"max_ms": round(max(health) * 1000, 1)}

        phase(4000)  # warm-up: the first searches after start-up pay one-time costs
        out["idle"], out["healthz_idle"] = phase(5000)
        print(f"idle: p50 {out['idle']['p50_ms']} p99 {out['idle']['p99_ms']} ms", file=sys.stderr)

        floats = [0.5 + i / 1000 for i in range(20)]  # the costliest filter allowed (20 range values)

        def heavy(c: httpx.Client, n: int) -> int:
            r = c.post(f"/v1/indexes/{args.index}/correlations", json=HEAVY_CORRELATIONS)
            if r.status_code in (200, 202) and n % 2:
                time.sleep(0.5)
                c.delete(f"/v1/jobs/{r.json()['id']}")
            time.sleep(0.2)
            return r.status_code

        attacks = {  # name: (key role, one request, concurrent copies)
            "float_filter_allowed": ("search", lambda c, n: c.post(f"/v1/indexes/{args.index}/search", json={
                "query": f"probe {n}", "where": {"score": floats}}).status_code, 3),
            "float_filter_1000": ("search", lambda c, n: c.post(f"/v1/indexes/{args.index}/search", json={
                "query": f"probe {n}", "where": {"score": [0.5 + i / 1e4 for i in range(1000)]}}).status_code, 1),
            "latents_top_20000": ("search", lambda c, n: c.get(f"/v1/indexes/{args.index}/latents", params={"top": 20000}).status_code, 1),
            "latents_top_200": ("search", lambda c, n: c.get(f"/v1/indexes/{args.index}/latents",
                                                             params={"top": 200, "offset": 200 * (n % 4)}).status_code, 1),
            "heavy_correlations": ("analyses", heavy, 2),
            "llm_expand": ("search", lambda c, n: c.post(f"/v1/indexes/{args.index}/search", json={
                "query": f"stall {n}", "expand": 3}).status_code, 2),
            "llm_rerank": ("search", lambda c, n: c.post(f"/v1/indexes/{args.index}/search", json={
                "query": f"stall {n}", "rerank": True}).status_code, 2),
        }
        chosen = [a for a in (args.only.split(",") if args.only else attacks)]
        phases = ([[a] for a in chosen] if args.each else []) + [chosen]
        out["phases"] = []
        for n_phase, names in enumerate(phases):
            atk = Attackers(base, args.index)
            for name in names:
                key, step, copies = attacks[name]
                atk.start(name, key, step, copies)
            peak, sampling = [rss_mb(proc.pid)], threading.Event()

            def sample():
                while not sampling.is_set():
                    peak[0] = max(peak[0], rss_mb(proc.pid))
                    time.sleep(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(2.0)  # let the attacks get going
            res, health = phase(9000 + 1000 * n_phase)
            codes = atk.finish()
            sampling.set()
            sampler.join(5)
            row = {"attacks": names, "search": res, "healthz": health, "codes": codes,
                   "p99_over_idle": round(res["p99_ms"] / out["idle"]["p99_ms"], 2), "rss_peak_mb": round(peak[0]),
                   "rss_growth_mb": round(peak[0] - rss0)}
            out["phases"].append(row)
            print(f"{'+'.join(names)}: p99 {res['p99_ms']} ms ({row['p99_over_idle']}x idle), healthz max {health['max_ms']} ms, "
                  f"RSS +{row['rss_growth_mb']} MB, honest errors {res['errors']}, answers {codes}", file=sys.stderr)
            time.sleep(3)  # let cancelled jobs stop before the next phase
        every = out["phases"][-1]
        out["goals"] = {"p99_within_2x": every["p99_over_idle"] <= 2.0, "healthz_within_50ms": every["healthz"]["max_ms"] <= 50,
                        "rss_growth_within_500mb": every["rss_growth_mb"] <= 500}
        print(json.dumps(out["goals"]), file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(30)
        llm.shutdown()
    write_result("abuse", out)


if __name__ == "__main__":
    main()
