"""Length-neutral SAE ranking (`search --length-neutral`) against the plain SAE ranking on the dev
queries: AP per query, MAP over all queries and over each half (odd lines, even lines:
:func:`benchmarks.tune_families.halves`), the share of each query's top 20 that are the slice's
longer half, and the ranking's CPU time. Both rankings from the same run, through the product's
own evaluation (``search.evaluate.evaluate``); dense for scale.

    python benchmarks/length_neutral.py --index dev_m
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402
from benchmarks.tune_families import _map, halves  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="dev_m")
    ap.add_argument("--queries", default=str(Path(__file__).parent / "queries" / "dev.jsonl"))
    args = ap.parse_args()
    from indexer.store import Filter, open_store
    from search.engine import SearchEngine, SearchOptions
    from search.evaluate import evaluate, load_queries

    qs = load_queries(args.queries)
    tune, val = ({q.name for q in h} for h in halves(qs))
    out: dict = {"index": args.index, "queries": len(qs), "runs": {}}
    with open_store(args.index) as store:
        engine = SearchEngine(store, args.index)
        dense = evaluate(engine, qs, ["dense"])
        out["dense"] = {"all": dense["summary"]["dense"]["map"], "tune": _map(dense, tune, "dense"), "validation": _map(dense, val, "dense")}
        longer_half = {}  # query -> ids of its slice's longer half (tokens read), read once for both rankings
        for q in qs:
            lengths = {h.doc_id: h.payload.get("n_tokens") or 0 for b in store.scroll_docs(Filter(dict(q.where)), with_sparse=False,
                                                                                          payload_fields=["doc_id", "n_tokens"]) for h in b}
            median = float(np.median(list(lengths.values())))
            longer_half[q.name] = {d for d, n in lengths.items() if n > median}
        for name, neutral in (("sae", False), ("sae_length_neutral", True)):
            t = time.process_time()
            res = evaluate(engine, qs, ["sae"], SearchOptions(length_neutral=neutral))
            cpu = time.process_time() - t
            longer = {}
            for q in qs:  # share of the top 20 from the slice's longer half
                top = engine.search(q.query, SearchOptions(length_neutral=neutral, k=20, where=dict(q.where), explain=False))["results"]
                longer[q.name] = round(float(np.mean([h["id"] in longer_half[q.name] for h in top])), 2) if top else None
            out["runs"][name] = {"map": res["summary"]["sae"]["map"], "tune": _map(res, tune, "sae"), "validation": _map(res, val, "sae"),
                                 "cpu_s_all_queries": round(cpu, 1),
                                 "per_query": {q["name"]: q["methods"]["sae"]["ap"] for q in res["queries"]},
                                 "top20_longer_half": longer}
            print(name, {k: v for k, v in out["runs"][name].items() if k not in ("per_query", "top20_longer_half")}, flush=True)
        out["dense_per_query"] = {q["name"]: q["methods"]["dense"]["ap"] for q in dense["queries"]}
    write_result("length_neutral", out)


if __name__ == "__main__":
    main()
