"""The query's meaning through the concept latents (``search/meaning.py``): the SAE ranking with
the term at several weights (and sizes) against without it, on the dev queries: AP per query, MAP
over all queries and each half (odd lines tune, even lines validate:
:func:`benchmarks.tune_families.halves`), the weight the tuning half picks and what the
validation half says of it; hybrid (which leaves the term out) and dense for scale. Every row from
the same run, through the product's own evaluation (``search.evaluate.evaluate``).

    python benchmarks/meaning.py --index dev_m
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402
from benchmarks.tune_families import _map, halves  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="dev_m")
    ap.add_argument("--queries", default=str(Path(__file__).parent / "queries" / "dev.jsonl"))
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1,2,4")
    ap.add_argument("--sizes", default="100", help="meaning_latents per weight (comma-separated)")
    args = ap.parse_args()
    from indexer.store import open_store
    from search.engine import SearchEngine, SearchOptions
    from search.evaluate import evaluate, load_queries

    qs = load_queries(args.queries)
    names = dict(zip(("tune", "validation"), ({q.name for q in h} for h in halves(qs))))
    out: dict = {"index": args.index, "queries": len(qs), "runs": []}
    with open_store(args.index) as store:
        engine = SearchEngine(store, args.index)
        base = evaluate(engine, qs, ["dense", "hybrid"])
        for m in ("dense", "hybrid"):
            out[m] = {"all": base["summary"][m]["map"]} | {h: _map(base, n, m) for h, n in names.items()}
        out["dense_per_query"] = {q["name"]: q["methods"]["dense"]["ap"] for q in base["queries"]}
        for size in (int(s) for s in args.sizes.split(",")):
            for w in (float(x) for x in args.weights.split(",")):
                if w == 0 and size != int(args.sizes.split(",")[0]):
                    continue  # weight 0 is the same ranking at every size
                t = time.process_time()
                res = evaluate(engine, qs, ["sae"], SearchOptions(meaning_weight=w, meaning_latents=size))
                run = {"weight": w, "latents": size, "cpu_s_all_queries": round(time.process_time() - t, 1),
                       "map": res["summary"]["sae"]["map"]} | {h: _map(res, n, "sae") for h, n in names.items()}
                run["x_dense"] = {"all": round(run["map"] / out["dense"]["all"], 3)} | {
                    h: round(run[h] / out["dense"][h], 3) for h in names}
                run["per_query"] = {q["name"]: q["methods"]["sae"]["ap"] for q in res["queries"]}
                out["runs"].append(run)
                print(w, size, run["x_dense"], run["cpu_s_all_queries"], flush=True)
    first = [r for r in out["runs"] if r["latents"] == int(args.sizes.split(",")[0])]
    pick = max(first, key=lambda r: (r["tune"], -r["weight"]))
    none = next(r for r in first if r["weight"] == 0)
    out["tuning_half_picks"] = {"weight": pick["weight"], "tune": pick["x_dense"]["tune"], "validation": pick["x_dense"]["validation"],
                                "validation_without": none["x_dense"]["validation"]}
    print("tuning half picks", out["tuning_half_picks"], flush=True)
    write_result("meaning", out)


if __name__ == "__main__":
    main()
