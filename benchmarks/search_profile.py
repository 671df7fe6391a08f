"""Where a search's milliseconds go: CPU time per SAE search in-process, and a cProfile split by
stage (query embedding, query -> latents, Qdrant calls, explanations), over distinct queries.

    python benchmarks/search_profile.py --index demo [--n 200]
    python benchmarks/search_profile.py --index demo --length-neutral --label length-neutral
    python benchmarks/search_profile.py --index demo --meaning-weight 0 --label no-meaning
    python benchmarks/search_profile.py --index demo --concept-share none --label joint   # families ranked together
    PYTHONPATH=../old python benchmarks/search_profile.py --index demo --label before   # another checkout

torch and BLAS run on one thread each, as in `saedex serve`. The first query (model and table loading) is not
counted. Writes benchmarks/results/search_profile[-LABEL].json.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # after PYTHONPATH: a checkout named there supplies indexer/ and search/


def _sibling(name: str):
    """This benchmark folder's module (not a PYTHONPATH checkout's older copy)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_common = _sibling("common")
distinct_queries, write_result = _common.distinct_queries, _common.write_result

# (stage, function name as cProfile records it, file fragment)
STAGES = [
    ("query embedding (MiniLM)", "encode", "indexer/encode/embedder.py"),
    ("query embedding (MiniLM, one text)", "_forward_one", "indexer/encode/embedder.py"),
    ("query -> latents (all of it)", "latents_by_family", "search/latents.py"),
    ("Qdrant: latent payloads", "get_latents", "indexer/store/base.py"),
    ("Qdrant: ranking query", "search_sparse", "indexer/store/base.py"),
    ("Qdrant: hits' vectors for explanations", "get_docs", "indexer/store/base.py"),
    ("freshness check (manifest + count)", "require_fresh_latent_stats", "indexer/store/catalog.py"),
    ("pseudo-relevance feedback", "feedback_latents", "search/engine.py"),
    ("the query's meaning through concept latents", "with_meaning", "search/engine.py"),
    ("length-neutral ranking (whole slice)", "rank_length_neutral", "search/length_neutral.py"),
    ("explanations", "_explain", "search/engine.py"),
    ("whole search", "search", "search/engine.py"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="demo")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--label", default="")
    ap.add_argument("--feedback", type=int, default=None, help="pseudo-relevance feedback documents (default: the engine's)")
    ap.add_argument("--length-neutral", action="store_true", help="length-neutral ranking (search --length-neutral)")
    ap.add_argument("--meaning-weight", type=float, default=None, help="the query's meaning term (default: the engine's)")
    ap.add_argument("--concept-share", default=None, help="the concept family's share of a query ('none': ranked together; "
                                                         "default: the engine's)")
    args = ap.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # as `saedex serve` runs
    threadpool_limits(1)
    import search.engine as engine_mod
    from indexer.store import open_store
    from search.engine import SearchEngine, SearchOptions

    store = open_store(args.index)
    eng = SearchEngine(store, args.index)
    opts = {"k": 10, "length_neutral": args.length_neutral} | ({} if args.feedback is None else {"feedback": args.feedback}) | (
        {} if args.meaning_weight is None else {"meaning_weight": args.meaning_weight}) | (
        {} if args.concept_share is None else {"concept_share": None if args.concept_share == "none" else float(args.concept_share)})
    t = time.process_time()
    eng.search("warm-up query", SearchOptions(**opts))  # loads models and tables (and the length baseline)
    warm_s = time.process_time() - t
    queries = distinct_queries(args.n, 5000)
    c0, w0 = time.process_time(), time.perf_counter()
    for q in queries:
        eng.search(q, SearchOptions(**opts))
    cpu_ms = (time.process_time() - c0) / len(queries) * 1000
    wall_ms = (time.perf_counter() - w0) / len(queries) * 1000
    prof = cProfile.Profile()
    prof.enable()
    for q in distinct_queries(args.n, 9000):
        eng.search(q, SearchOptions(**opts))
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    stages = {}
    for stage, name, frag in STAGES:
        ct = sum(v[3] for (f, _, n), v in stats.items() if n == name and f.replace("\\", "/").endswith(frag))
        if ct:
            stages[stage] = round(ct / args.n * 1000, 2)
    out = {"index": args.index, "code": str(Path(engine_mod.__file__).resolve().parents[1].name), "searches": args.n,
           "length_neutral": args.length_neutral, "meaning_weight": SearchOptions(**opts).meaning_weight,
           "concept_share": SearchOptions(**opts).concept_share, "warm_up_cpu_s": round(warm_s, 2),
           "cpu_ms_per_search": round(cpu_ms, 2), "wall_ms_per_search": round(wall_ms, 2),
           "profiled_ms_per_search_by_stage": stages}
    store.close()
    write_result("search_profile" + (f"-{args.label}" if args.label else ""), out)


if __name__ == "__main__":
    main()
