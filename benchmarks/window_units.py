"""Concept units: single sentences or windows of two sentences? Builds both training unit caches.

The issue asked to consider short windows of 2-3 sentences as the concept family's units: a
window's embedding carries more context than one sentence's, which might make latents topics
and stances rather than words. This script builds two unit caches from the same documents of
``sae_train.jsonl.gz``, de-duplicated and balanced over sources as ``train-sae`` does, with the
same number of units: sentences (``indexer.encode.units``), and non-overlapping windows of two
consecutive sentences (a document's lone last sentence stays alone). Then, by hand:

    python benchmarks/window_units.py --units 120000              # /tmp/window_units/{sentence,window}_units
    for k in sentence window; do
      saedex train-sae ../shared/data/sae_train.jsonl.gz --family concept --out /tmp/window_units/sae_$k \\
          --cache-dir /tmp/window_units/${k}_units --prefixes 128,512 --max-steps 9000
      python benchmarks/latent_coherence.py --units /tmp/window_units/${k}_units --sae $k=/tmp/window_units/sae_$k \\
          --judge PATH/all-mpnet-base-v2 --n-units 30000 --name latent_coherence-units-$k
    done

Measured (README "Units, chosen by measurement"): windows are less coherent and share more than
a word less often than sentences, so sentences stay the units.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.encode.embedder import get_embedder  # noqa: E402
from indexer.encode.units import units_of  # noqa: E402
from indexer.train.unit_cache import balanced_units, cache_unit_embeddings  # noqa: E402

HOLDOUT = 5000


def windows_of(text: str) -> list[str]:
    """Non-overlapping windows of two consecutive sentences (a lone last sentence stays alone)."""
    us = units_of(text)
    return [" ".join(us[i : i + 2]) for i in range(0, len(us), 2)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "sae_train.jsonl.gz"))
    ap.add_argument("--units", type=int, default=120_000, help="training units per cache (plus 5,000 held out)")
    ap.add_argument("--out", default="/tmp/window_units")
    args = ap.parse_args()
    with gzip.open(args.corpus, "rt") as f:
        docs = [(d["text"], d.get("source", "")) for d in map(json.loads, f)]
    emb = get_embedder("all-MiniLM-L6-v2")
    for kind, split in (("sentence", units_of), ("window", windows_of)):
        units, per_source = balanced_units(docs, args.units + HOLDOUT, split=split)
        print(kind, len(units), per_source, flush=True)
        cache_unit_embeddings(units, Path(args.out) / f"{kind}_units", emb, holdout_units=HOLDOUT)


if __name__ == "__main__":
    main()
