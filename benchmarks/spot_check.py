"""Spot-check labels: N random latents (firing in >= 5 documents) with label, kind, quality and
their strongest examples, the firing span in [brackets] (a token, or a sentence for the concept family).

    python benchmarks/spot_check.py --index demo [--n 10 --seed 0 --family token|concept|all --examples 2]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="demo")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--family", default="all", choices=("all", "token", "concept"))
    ap.add_argument("--examples", type=int, default=2)
    args = ap.parse_args()
    from indexer.store import open_store

    store = open_store(args.index)
    try:
        pts = [p for p in store.get_latents() if p.payload.get("doc_count", 0) >= 5
               and args.family in ("all", p.payload.get("family", "token"))]
    finally:
        store.close()
    for p in random.Random(args.seed).sample(pts, min(args.n, len(pts))):
        pl = p.payload
        q = pl.get("quality")
        print(f"\n### latent {p.latent}: {pl['label']}  [{pl.get('family', 'token')}, {pl.get('kind', 'lexical')}, "
              f"quality {q if q is not None else '-'}] (in {pl['doc_count']} docs)")
        for ex in [e for e in pl["examples"] if e.get("span")][: args.examples]:
            s, e = ex["span"]
            t = ex["text"]
            wide = 70 if pl.get("family") != "concept" else 0
            print("  - …" + (t[max(0, s - wide):s] + "[" + t[s:e] + "]" + t[e:e + min(wide, 50)]).replace("\n", " ") + "…")


if __name__ == "__main__":
    main()
