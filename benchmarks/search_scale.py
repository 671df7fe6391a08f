"""End-to-end search cost at scale: a real index grown to N documents by resampling its own
vectors, then CPU time per search (query embedding, query -> latents, Qdrant, explanations).

    python benchmarks/search_scale.py --from demo --docs 100000 [--queries 200] [--keep]

Document i copies document (i mod n) of the source index - its text, firing spans, dense vector
and SAE vector with each activation scaled by log-normal noise (sigma 0.1) and 10% of its
non-zeros dropped - so postings have the real index's shape and co-occurrences at N documents.
The latents collection (labels, vectors, p90) and the manifest are the source's; the columnar
copy is written in step, as an ingest does. Searches run as in `saedex serve` (torch and BLAS on
one thread); reported: CPU ms per search (process time, distinct queries), wall p50/p99, and the
same with explanations read from Qdrant vectors instead of the columnar copy.
Writes benchmarks/results/search_scale.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import distinct_queries, peak_rss_mb, percentiles, write_result  # noqa: E402


def build(source: str, target: str, n: int, seed: int = 0) -> float:
    from indexer.store.columns import writer_for
    from indexer.store import DocPoint, open_store

    rng = np.random.default_rng(seed)
    with open_store(source) as src:
        manifest = src.read_manifest()
        docs = [h for batch in src.scroll_docs(with_sparse=True, with_dense=True) for h in batch]
        latents = src.get_latents(with_vectors=True)
    dense_dim, label_dim = len(docs[0].payload["_dense"]), len(latents[0].label_vec)
    t0 = time.perf_counter()
    with open_store(target) as dst:
        dst.lock()
        dst.create(dense_dim=dense_dim, label_dim=label_dim)
        dst.upsert_latents(latents)
        manifest = {k: v for k, v in manifest.items() if k not in ("generation", "revision")}
        manifest["datasets"] = ["synth"]
        dst.write_manifest(dict(manifest))
        columns = writer_for(dst, replacing=False)
        batch: list[DocPoint] = []
        for i in range(n):
            h = docs[i % len(docs)]
            idx, val = (np.asarray(a) for a in h.sparse.arrays()) if hasattr(h.sparse, "arrays") else (
                np.array(list(h.sparse.keys())), np.array(list(h.sparse.values()), np.float32))
            keep = rng.random(len(idx)) >= 0.1
            vals = (val[keep] * rng.lognormal(0.0, 0.1, int(keep.sum()))).astype(np.float32)
            payload = {k: v for k, v in h.payload.items() if k not in ("_dense", "doc_id")} | {"dataset": "synth"}
            batch.append(DocPoint(f"s{i}", idx[keep].tolist(), vals.tolist(), h.payload["_dense"], payload))
            if len(batch) == 1000:
                dst.upsert_docs(batch)
                if columns is not None:
                    columns.append_points(batch)
                batch = []
                print(f"\r{i + 1:,} / {n:,} documents, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
        if batch:
            dst.upsert_docs(batch)
            if columns is not None:
                columns.append_points(batch)
        m = dst.read_manifest()
        m["latent_stats_docs"] = n
        dst.write_manifest(m)
    print(file=sys.stderr)
    return time.perf_counter() - t0


def measure(index: str, queries: int) -> dict:
    import torch
    from threadpoolctl import threadpool_limits

    from indexer.store import open_store
    from search.engine import SearchEngine, SearchOptions

    torch.set_num_threads(1)
    threadpool_limits(1)
    out = {}
    with open_store(index) as store:
        eng = SearchEngine(store, index)
        eng.search("warm-up", SearchOptions(k=10))
        out["documents"] = store.count()
        out["columnar_locator"] = eng.locator() is not None
        for label, locate in (("explanations from the columnar copy", True), ("explanations from Qdrant vectors", False)):
            if not locate:
                eng._locators["response"] = (eng.token(), None)
            qs = distinct_queries(queries, 60000 if locate else 70000)
            walls = []
            c0 = time.process_time()
            for q in qs:
                t = time.perf_counter()
                eng.search(q, SearchOptions(k=10))
                walls.append(time.perf_counter() - t)
            out[label] = {"cpu_ms_per_search": round((time.process_time() - c0) / len(qs) * 1000, 2), **percentiles(walls)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="source", default="demo")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--target", default=None, help="index name to build (default scale<N>)")
    ap.add_argument("--reuse", action="store_true", help="measure an index built by an earlier run")
    args = ap.parse_args()
    from indexer.store import list_indexes

    target = args.target or f"scale{args.docs // 1000}k"
    result = {"source": args.source, "target": target}
    if not (args.reuse and target in list_indexes()):
        if target in list_indexes():
            sys.exit(f"index {target!r} exists: drop it (saedex drop --index {target}) or pass --reuse")
        result["build_s"] = round(build(args.source, target, args.docs), 1)
    result["search"] = measure(target, args.queries)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_result("search_scale", result)


if __name__ == "__main__":
    main()
