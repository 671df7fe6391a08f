"""Spot-check labels: N random latents (firing in >= 5 documents) with label, kind, quality and two
activating examples, firing token in [brackets].

    python benchmarks/spot_check.py --index demo [--n 10 --seed 0]
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
    args = ap.parse_args()
    from indexer.store import open_store

    store = open_store(args.index)
    try:
        pts = [p for p in store.get_latents() if p.payload.get("doc_count", 0) >= 5]
    finally:
        store.close()
    for p in random.Random(args.seed).sample(pts, min(args.n, len(pts))):
        pl = p.payload
        q = pl.get("quality")
        print(f"\n### latent {p.latent}: {pl['label']}  [{pl.get('kind', 'lexical')}, quality {q if q is not None else '-'}] "
              f"(in {pl['doc_count']} docs)")
        for ex in [e for e in pl["examples"] if e.get("span")][:2]:
            s, e = ex["span"]
            t = ex["text"]
            print("  - …" + (t[max(0, s - 70):s] + "[" + t[s:e] + "]" + t[e:e + 50]).replace("\n", " ") + "…")


if __name__ == "__main__":
    main()
