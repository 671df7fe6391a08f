"""Grid over property-search settings on the dev queries (SAE method only); prints MAP per setting.

    python benchmarks/tune_search.py --index dev
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="dev")
    ap.add_argument("--queries", default=str(Path(__file__).parent / "queries" / "dev.jsonl"))
    ap.add_argument("--grid", default="0,0.5,1;0,0.5,1;0,0.5;0.2,0.5;100",
                    help="label_weight;direction_weight;quality_weight;T;n_latents value lists")
    args = ap.parse_args()
    from indexer.store import open_store
    from search.engine import SearchEngine, SearchOptions
    from search.evaluate import evaluate, load_queries

    store = open_store(args.index)
    eng = SearchEngine(store, args.index)
    qs = load_queries(args.queries)
    rows = []
    grid = [tuple(float(x) for x in g.split(",")) for g in args.grid.split(";")]
    for lw, dw, qw, t, n in itertools.product(*grid):
        opts = SearchOptions(label_weight=lw, direction_weight=dw, quality_weight=qw, temperature=t, n_latents=int(n))
        res = evaluate(eng, qs, ["sae"], opts)
        row = {"label_weight": lw, "direction_weight": dw, "quality_weight": qw, "T": t, "n": int(n), "map": res["summary"]["sae"]["map"],
               "per_query": {q["name"]: q["methods"]["sae"]["ap"] for q in res["queries"]}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    store.close()
    best = max(rows, key=lambda r: r["map"])
    print("best:", json.dumps(best))


if __name__ == "__main__":
    main()
