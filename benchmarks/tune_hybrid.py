"""Weighted score fusion for the hybrid method, chosen on half the dev queries and checked on the other.

The hybrid ranking is Qdrant's DBSF: each list's scores (SAE, dense) mapped onto [mean - 3 sd,
mean + 3 sd] of that list, then summed with equal weight; Qdrant offers no weight for DBSF. This
benchmark fuses the same two prefetched lists in Python with the SAE list weighted ``w`` (dense 1):
at w = 1 it must reproduce Qdrant's DBSF MAP exactly (checked and printed), so that what moves
with ``w`` is the weight alone. Odd dev-query lines tune, even lines validate
(:func:`benchmarks.tune_families.halves`); dense, SAE and each hybrid from the same run.

    python benchmarks/tune_hybrid.py --index dev_m --weights 0.5,0.75,1,1.5,2
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402
from benchmarks.tune_families import _map, halves  # noqa: E402


def dbsf_scores(hits: list) -> dict[str, float]:
    """Qdrant's distribution-based normalisation of one list: (s - (mu - 3 sd)) / (6 sd)."""
    s = np.array([h.score for h in hits], float)
    if not len(s):
        return {}
    lo, hi = s.mean() - 3 * s.std(), s.mean() + 3 * s.std()
    return {h.doc_id: float((x - lo) / (hi - lo)) if hi > lo else 0.5 for h, x in zip(hits, s)}


def weighted_dbsf(weight: dict):
    """A ``Store.search_hybrid`` replacement: the two prefetches, fused with ``weight["sae"]``."""

    def search_hybrid(self, indices, values, vector, limit, flt=None, rrf_k=60, prefetch=200, with_sparse=False,
                      sparse_weight=1.0, fusion="rrf", without_fields=(), view="response"):
        sae = self.search_sparse(indices, values, prefetch, flt, with_sparse=with_sparse, without_fields=without_fields, view=view)
        dense = self.search_dense(vector, prefetch, flt, with_sparse=with_sparse, without_fields=without_fields)
        a, b = dbsf_scores(sae), dbsf_scores(dense)
        hits = {h.doc_id: h for h in dense} | {h.doc_id: h for h in sae}
        score = {d: weight["sae"] * a.get(d, 0.0) + b.get(d, 0.0) for d in hits}
        return [hits[d] for d in sorted(hits, key=lambda d: (-score[d], d))[:limit]]

    return search_hybrid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="dev")
    ap.add_argument("--queries", default=str(Path(__file__).parent / "queries" / "dev.jsonl"))
    ap.add_argument("--weights", default="0.5,0.75,1,1.5,2")
    ap.add_argument("--out", default="tune_hybrid")
    args = ap.parse_args()
    from indexer.store import open_store
    from search.engine import SearchEngine
    from search.evaluate import evaluate, load_queries

    store = open_store(args.index)
    eng = SearchEngine(store, args.index)
    qs = load_queries(args.queries)
    tune, val = ({q.name for q in h} for h in halves(qs))
    parts = {"all": tune | val, "tuning": tune, "validation": val}

    def maps(res: dict, method: str) -> dict[str, float]:
        return {k: _map(res, names, method) for k, names in parts.items()}

    base = evaluate(eng, qs, ["sae", "dense", "hybrid"])
    dense = maps(base, "dense")
    out = {"index": args.index, "dense": dense, "sae": maps(base, "sae"), "hybrid_qdrant_dbsf": maps(base, "hybrid"), "weighted": []}
    weight = {"sae": 1.0}
    store.search_hybrid = types.MethodType(weighted_dbsf(weight), store)
    for w in (float(x) for x in args.weights.split(",")):
        weight["sae"] = w
        res = evaluate(eng, qs, ["hybrid"])
        m = maps(res, "hybrid")
        row = {"sae_weight": w, "map": m, "x_dense": {k: round(m[k] / dense[k], 3) for k in m},
               "ap": {q["name"]: round(q["methods"]["hybrid"]["ap"], 3) for q in res["queries"]}}
        out["weighted"].append(row)
        print(json.dumps(row), flush=True)
    one = [r for r in out["weighted"] if r["sae_weight"] == 1.0]
    out["w1_reproduces_qdrant"] = bool(one) and one[0]["map"] == out["hybrid_qdrant_dbsf"]
    best = max(out["weighted"], key=lambda r: r["map"]["tuning"])
    out["chosen_on_tuning_half"] = {"sae_weight": best["sae_weight"], "x_dense": best["x_dense"]}
    store.close()
    write_result(args.out, out)


if __name__ == "__main__":
    main()
