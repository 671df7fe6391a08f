"""How a query weighs the two SAE families, chosen on half the dev queries and checked on the other.

Settings: ``concept_share`` (None: both families' latents ranked together by query similarity, the
default until session 19; a number: each family ranked on its own, the concept family given that
share of the query's weight - 0.8 is the default now, chosen with this script) and ``concept_direction_weight`` (the concept latents' decoder rows, which live
in the query embedder's space, as a third matching signal). The dev queries are split by line:
odd lines tune, even lines validate (each half holds one sentiment query). Dense and, per
setting, SAE and hybrid MAP are reported for both halves from the same run, and for a second,
held-out query set (``--heldout``, default ``queries/heldout.jsonl``: 26 queries no setting was
chosen on) - the setting is picked on the tuning half alone.

    python benchmarks/tune_families.py --index dev_m --shares none,0.3,0.5,0.6,0.7,0.8,0.9,1 --directions 0 \
        --out tune_families-heldout
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402


def halves(queries: list) -> tuple[list, list]:
    """Odd lines (1st, 3rd, ...) tune; even lines validate."""
    return queries[0::2], queries[1::2]


def _map(res: dict, names: set[str], method: str) -> float:
    return round(float(np.mean([q["methods"][method]["ap"] for q in res["queries"] if q["name"] in names])), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="dev")
    ap.add_argument("--queries", default=str(Path(__file__).parent / "queries" / "dev.jsonl"))
    ap.add_argument("--heldout", default=str(Path(__file__).parent / "queries" / "heldout.jsonl"),
                    help="A second query set to validate on ('' for none).")
    ap.add_argument("--shares", default="none,0.3,0.5,0.7")
    ap.add_argument("--directions", default="0,0.3,0.6")
    ap.add_argument("--out", default="tune_families")
    args = ap.parse_args()
    from indexer.store import open_store
    from search.engine import SearchEngine, SearchOptions
    from search.evaluate import evaluate, load_queries

    qs = load_queries(args.queries)
    tune, validate = halves(qs)
    names = {"tune": {q.name for q in tune}, "validation": {q.name for q in validate}}
    store = open_store(args.index)
    eng = SearchEngine(store, args.index)
    rows = []
    base = evaluate(eng, qs, ["dense", "bm25"], SearchOptions())
    dense = {h: _map(base, n, "dense") for h, n in names.items()}
    held = load_queries(args.heldout) if args.heldout else []
    held_names = {"heldout": {q.name for q in held}, "heldout_odd": {q.name for q in halves(held)[0]},
                  "heldout_even": {q.name for q in halves(held)[1]}} if held else {}
    held_base = evaluate(eng, held, ["dense"], SearchOptions()) if held else None
    dense.update({h: _map(held_base, n, "dense") for h, n in held_names.items()})
    print(json.dumps({"dense": dense}), flush=True)
    shares = [None if s == "none" else float(s) for s in args.shares.split(",")]
    for share, dw in itertools.product(shares, [float(x) for x in args.directions.split(",")]):
        opts = SearchOptions(concept_share=share, concept_direction_weight=dw)
        res = evaluate(eng, qs, ["sae", "hybrid"], opts)
        row = {"concept_share": share, "concept_direction_weight": dw}
        for h, n in names.items():
            for m in ("sae", "hybrid"):
                row[f"{h}_{m}"] = _map(res, n, m)
                row[f"{h}_{m}_x_dense"] = round(row[f"{h}_{m}"] / dense[h], 3)
        row["all_sae"], row["all_hybrid"] = res["summary"]["sae"]["map"], res["summary"]["hybrid"]["map"]
        row["per_query"] = {q["name"]: {m: q["methods"][m]["ap"] for m in ("sae", "hybrid")} for q in res["queries"]}
        if held:
            hres = evaluate(eng, held, ["sae", "hybrid"], opts)
            for h, n in held_names.items():
                for m in ("sae", "hybrid"):
                    row[f"{h}_{m}"] = _map(hres, n, m)
                    row[f"{h}_{m}_x_dense"] = round(row[f"{h}_{m}"] / dense[h], 3)
            row["per_query"].update({f"heldout:{q['name']}": {m: q["methods"][m]["ap"] for m in ("sae", "hybrid")}
                                     for q in hres["queries"]})
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "per_query"}), flush=True)
    store.close()
    best = max(rows, key=lambda r: r["tune_sae"])
    summary = {"dense": dense, "dense_all": base["summary"]["dense"]["map"], "bm25_all": base["summary"]["bm25"]["map"],
               "dense_per_query": {q["name"]: q["methods"]["dense"]["ap"] for q in base["queries"]}
               | ({f"heldout:{q['name']}": q["methods"]["dense"]["ap"] for q in held_base["queries"]} if held_base else {}),
               "halves": {h: sorted(n) for h, n in names.items()}, "rows": rows,
               "chosen_on_tune_half": {k: v for k, v in best.items() if k != "per_query"}}
    print("chosen on the tuning half:", json.dumps(summary["chosen_on_tune_half"]))
    write_result(args.out, summary)


if __name__ == "__main__":
    main()
