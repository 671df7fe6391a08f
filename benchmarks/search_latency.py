"""SAE search latency vs BM25 at 10k and 200k documents, in one run.

    python benchmarks/search_latency.py [--sizes 10000,200000] [--queries 200]

Documents are synthetic sparse vectors of the real index's shape: each document gets a number
of active latents drawn around the mean measured on the demo index (``--nnz``), latent ids drawn
from a Zipf-like popularity (a few latents fire everywhere, most rarely), activation values
log-normal. Queries are what property search sends: 100 latents with rank weights / p90. BM25
runs on synthetic texts of the same documents (Zipfian words) with saedex's BM25 (rank-bm25
statistics, CSR scoring). Also times the end-to-end SAE search (query embedding + latent lookup +
Qdrant + explanations) on a real index when ``--real-index`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result, Timer, peak_rss_mb, percentiles  # noqa: E402


def synth_docs(n: int, d_sae: int, nnz: int, rng: np.random.Generator):
    pop = 1.0 / np.arange(1, d_sae + 1) ** 0.9
    pop /= pop.sum()
    perm = rng.permutation(d_sae)
    for _ in range(n):
        k = max(8, int(rng.normal(nnz, nnz * 0.3)))
        ids = np.unique(perm[rng.choice(d_sae, size=k, p=pop)])
        yield ids.tolist(), rng.lognormal(0.5, 0.6, size=len(ids)).astype(np.float32).tolist()


def synth_text(rng: np.random.Generator, vocab: list[str], pop: np.ndarray) -> str:
    return " ".join(vocab[i] for i in rng.choice(len(vocab), size=int(rng.integers(20, 120)), p=pop))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,200000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nnz", type=int, default=400, help="mean active latents per document (measure on your index)")
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--real-index", default=None)
    args = ap.parse_args()
    real_home = os.environ.get("SAEDEX_HOME")
    os.environ["SAEDEX_HOME"] = tempfile.mkdtemp(prefix="saedex-bench-")
    from indexer.store import DocPoint, EdgeStore
    from search.bm25 import build_bm25

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(30000)]
    wpop = 1.0 / np.arange(1, len(vocab) + 1)
    wpop /= wpop.sum()
    results = {"nnz_mean": args.nnz, "d_sae": args.d_sae, "sizes": {}}
    for n in [int(s) for s in args.sizes.split(",")]:
        store = EdgeStore(Path(os.environ["SAEDEX_HOME"]) / f"s{n}")
        store.create(dense_dim=4, label_dim=4)
        texts = []
        with Timer() as t_ins:
            batch = []
            for i, (ids, vals) in enumerate(synth_docs(n, args.d_sae, args.nnz, rng)):
                batch.append(DocPoint(str(i), ids, vals, [1.0, 0, 0, 0], {"dataset": "synth"}))
                texts.append(synth_text(rng, vocab, wpop))
                if len(batch) == 2000:
                    store.upsert_docs(batch)
                    batch = []
            if batch:
                store.upsert_docs(batch)
        with Timer() as t_bm:
            bm = build_bm25([str(i) for i in range(n)], texts)
        w = np.exp(-(np.arange(100) / 100) / 0.2)
        sae_times, bm_times = [], []
        for _ in range(args.queries):
            lat = rng.choice(args.d_sae, 100, replace=False).tolist()
            vals = (w / rng.lognormal(0.8, 0.3, 100)).tolist()
            t = time.perf_counter()
            store.search_sparse(lat, vals, 10)
            sae_times.append(time.perf_counter() - t)
            q = " ".join(vocab[i] for i in rng.choice(2000, 3))
            t = time.perf_counter()
            bm.top(q, 10)
            bm_times.append(time.perf_counter() - t)
        results["sizes"][n] = {"insert_s": round(t_ins.s, 1), "bm25_build_s": round(t_bm.s, 1),
                               "sae_qdrant_edge": percentiles(sae_times), "bm25": percentiles(bm_times)}
        results["sizes"][n]["p50_ratio_bm25_over_sae"] = round(results["sizes"][n]["bm25"]["p50_ms"] / results["sizes"][n]["sae_qdrant_edge"]["p50_ms"], 2)
        print(json.dumps({n: results["sizes"][n]}), flush=True)
        store.close()
    if args.real_index:
        os.environ["SAEDEX_HOME"] = real_home or str(Path.home() / ".saedex")
        from indexer.store import open_store
        from search.engine import SearchEngine, SearchOptions

        store = open_store(args.real_index)
        eng = SearchEngine(store, args.real_index)
        qs = ["direct quotes from people", "a sarcastic remark", "numbers and statistics", "an apology", "questions to the reader"]
        eng.search(qs[0], SearchOptions(k=10))
        times = []
        for i in range(50):
            t = time.perf_counter()
            eng.search(qs[i % len(qs)], SearchOptions(k=10))
            times.append(time.perf_counter() - t)
        results["end_to_end_sae_search_real_index"] = {"index": args.real_index, "documents": store.count(), **percentiles(times)}
        store.close()
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_result("search_latency", results)


if __name__ == "__main__":
    main()
