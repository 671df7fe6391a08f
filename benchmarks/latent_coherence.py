"""How coherent are a latent's strongest examples? The ceiling a label spot check can reach.

    python benchmarks/latent_coherence.py --index demo

A spot check asks whether a label names what a latent's two strongest examples share. When the
two share nothing at all, no label can pass. This counts, over every latent firing in at least
5 documents of the index, whether its two strongest examples fire on the same token
(case-insensitive), else share a surface form (:mod:`indexer.labels.forms`: both first pieces of split
names, ...), else neither. "Same token" + "same form" bounds a strict spot check from above, with
no judgement and whatever the labeller, so it compares SAEs (index the same corpus with each).
Writes benchmarks/results/latent_coherence-INDEX.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result  # noqa: E402


def coherence(latents: list) -> dict:
    from indexer.labels.forms import forms_of

    same = form = n = 0
    for p in latents:
        ex = [e for e in p.payload.get("examples", []) if e.get("span")][:2]
        if len(ex) < 2:
            continue
        n += 1
        toks = [e["text"][e["span"][0]:e["span"][1]].strip().lower() for e in ex]
        if toks[0] == toks[1]:
            same += 1
        elif forms_of(ex[0]["text"], ex[0]["span"]) & forms_of(ex[1]["text"], ex[1]["span"]):
            form += 1
    share = (lambda c: round(c / n, 3)) if n else (lambda c: 0.0)
    return {"latents": n, "same_token": share(same), "same_form": share(form), "neither": share(n - same - form),
            "strict_spot_check_ceiling_of_20": round(20 * (same + form) / n, 1) if n else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="demo")
    ap.add_argument("--min-docs", type=int, default=5)
    args = ap.parse_args()
    from indexer.encode.recipe import read_manifest
    from indexer.store import open_store

    with open_store(args.index) as store:
        latents = [p for p in store.get_latents() if p.payload.get("doc_count", 0) >= args.min_docs]
        recipe = read_manifest(store).recipe
    result = {"index": args.index, "documents_min": args.min_docs,
              "sae": {"path": recipe.sae.path, "hash": recipe.sae.hash, "d_sae": recipe.sae.d_sae, "k": recipe.sae.k}}
    result.update(coherence(latents))
    write_result(f"latent_coherence-{args.index}", result)


if __name__ == "__main__":
    main()
