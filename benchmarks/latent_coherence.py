"""How coherent are a latent's strongest examples? The ceiling a label spot check can reach, per family.

    python benchmarks/latent_coherence.py --index demo [--judge PATH_OR_NAME]

A spot check asks whether a label names what a latent's strongest examples share. When they share
nothing at all, no label can pass. Two measures, neither of which reads a label or the labeller:

- *Surface* (token family): over every latent firing in at least 5 documents, do its two strongest
  examples fire on the same token (case-insensitive), else share a surface form
  (:mod:`indexer.labels.forms`: both first pieces of split names, ...), else neither. "Same token" +
  "same form" bounds a strict spot check from above.
- *Semantic* (both families): the three strongest examples' firing text (the sentence unit of a
  concept latent; the sentence around the token of a token latent) embedded by a *judge* embedder,
  mean pairwise cosine, against the same statistic for three examples drawn at random from the
  index's example pool: a latent is coherent where it exceeds the random triples' 95th percentile.
  Among coherent latents, "one word" counts those whose three texts share a content word (what
  they share may be just that word), "beyond a word" the rest. The judge should not be the
  embedder the concept SAE was trained on (its top units are close there by construction):
  pass ``--judge`` a different sentence-transformers model (all-mpnet-base-v2 here); the result
  records which judged.

Writes benchmarks/results/latent_coherence-INDEX.json.

Concept SAEs before any index (``--sae NAME=PATH`` repeated, ``--units DIR``: a `train-sae --family
concept` unit cache): the same semantic measure on each SAE's three strongest distinct units among
the first ``--n-units`` training units, one judge and one null for all, and by latent position
(Matryoshka SAEs order their latents from broad to narrow). Writes
benchmarks/results/latent_coherence-units.json (``--name``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result  # noqa: E402
from indexer.labels.concept_labels import _STOP as CONCEPT_STOP  # noqa: E402

TOP = 3
RANDOM_TRIPLES = 2000
_WORD = re.compile(r"[a-z][a-z'\-]*[a-z]")
# the concept labeller's stop words, and words every news text has
STOP_WORDS = CONCEPT_STOP | {"said", "says", "one", "two", "new"}


def surface_coherence(latents: list) -> dict:
    """Token family: do the two strongest examples fire on the same token or surface form."""
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


def firing_text(example: dict, family: str) -> str:
    """What an example shows: a concept latent's sentence unit; a token latent's sentence around its token."""
    text, (s, e) = example["text"], example["span"]
    if family == "concept":
        return text[s:e]
    left = max(text.rfind(c, 0, s) for c in ".!?\n") + 1
    right = [i for i in (text.find(c, e) for c in ".!?\n") if i >= 0]
    return text[left:(min(right) + 1 if right else len(text))]


def content_words(text: str) -> set[str]:
    return {w.rstrip("s") for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOP_WORDS}


def mean_pairwise(v: np.ndarray) -> float:
    s = v @ v.T
    n = len(v)
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


def semantic_coherence(latents: list, judge, seed: int = 0) -> dict:
    """Both families: the TOP strongest examples' mean pairwise cosine in the judge's space, against
    random triples of the same index's examples."""
    rows = []
    for p in latents:
        fam = p.payload.get("family", "token")
        ex = [e for e in p.payload.get("examples", []) if e.get("span")][:TOP]
        if len(ex) == TOP:
            rows.append((fam, [firing_text(e, fam) for e in ex]))
    if not rows:
        return {}
    texts = [t for _, ts in rows for t in ts]
    vecs = judge.encode(texts, batch_size=64)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    out = {}
    for fam in sorted({f for f, _ in rows}):
        idx = [i for i, (f, _) in enumerate(rows) if f == fam]
        pool = np.concatenate([np.arange(i * TOP, i * TOP + TOP) for i in idx])
        null = np.array([mean_pairwise(vecs[rng.choice(pool, TOP, replace=False)]) for _ in range(RANDOM_TRIPLES)])
        bar = float(np.quantile(null, 0.95))
        scores, coherent, shared = _scored([rows[i][1] for i in idx], np.concatenate([vecs[i * TOP:(i + 1) * TOP] for i in idx]), bar)
        n = len(idx)
        out[fam] = {"latents": n, "random_triples_p95": round(bar, 4), "median_score": round(float(np.median(scores)), 4),
                    "coherent": round(float(coherent.mean()), 3),
                    "coherent_one_word": round(float((coherent & shared).mean()), 3),
                    "coherent_beyond_a_word": round(float((coherent & ~shared).mean()), 3),
                    "coherent_of_20": round(20 * float(coherent.mean()), 1),
                    "beyond_a_word_of_20": round(20 * float((coherent & ~shared).mean()), 1)}
    return out


def _scored(texts_by_latent: list[list[str]], vecs: np.ndarray, bar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean pairwise cosine, coherent, shares a content word) per latent; ``vecs`` are the judge's
    rows of the latents' texts, TOP per latent in order."""
    scores = np.array([mean_pairwise(vecs[i * TOP:(i + 1) * TOP]) for i in range(len(texts_by_latent))])
    shared = np.array([bool(set.intersection(*(content_words(t) for t in ts))) for ts in texts_by_latent])
    return scores, scores > bar, shared


def unit_coherence(saes: dict[str, str], units_dir: Path, judge, n_units: int, seed: int = 0) -> dict:
    """Semantic coherence of concept SAEs on the same training units (no index, no labels)."""
    import torch

    from indexer.encode.sae import load_sae
    from indexer.train.activation_cache import iter_shards

    units = (units_dir / "units.txt").read_text().split("\n")[:n_units]
    parts, have = [], 0
    for shard in iter_shards(units_dir):  # row i of the shards is line i of units.txt
        if have >= len(units):
            break
        parts.append(np.asarray(shard[: len(units) - have], np.float32))
        have += len(parts[-1])
    X = np.concatenate(parts)
    tops = {}
    for name, path in saes.items():
        sae = load_sae(path)
        with torch.inference_mode():
            Z = np.concatenate([sae.encode(torch.from_numpy(X[i:i + 5000])).numpy() for i in range(0, len(X), 5000)])
        rows = []
        for j in np.flatnonzero((Z > 0).sum(0) >= 5):
            seen, top = set(), []
            for r in np.argsort(-Z[:, j])[: 10 * TOP]:
                if Z[r, j] > 0 and units[r].lower() not in seen:
                    seen.add(units[r].lower())
                    top.append(units[r])
                if len(top) == TOP:
                    break
            if len(top) == TOP:
                rows.append((int(j), top))
        tops[name] = rows
    texts = sorted({t for rows in tops.values() for _, ts in rows for t in ts})
    allv = judge.encode(texts, batch_size=64)
    allv /= np.maximum(np.linalg.norm(allv, axis=1, keepdims=True), 1e-12)
    vec_of = dict(zip(texts, allv))
    rng = np.random.default_rng(seed)
    bar = float(np.quantile([mean_pairwise(allv[rng.choice(len(allv), TOP, replace=False)]) for _ in range(RANDOM_TRIPLES)], 0.95))
    out = {"units": len(units), "random_triples_p95": round(bar, 4), "saes": {}}
    for name, rows in tops.items():
        v = np.stack([vec_of[t] for _, ts in rows for t in ts])
        _, coherent, shared = _scored([ts for _, ts in rows], v, bar)
        pos = np.array([j for j, _ in rows])
        r = {"latents": len(rows), "coherent": round(float(coherent.mean()), 3),
             "coherent_beyond_a_word": round(float((coherent & ~shared).mean()), 3), "by_position": {}}
        for lo, hi in ((0, 128), (128, 512), (512, None)):
            m = (pos >= lo) & (pos < (hi or 1 << 30))
            if m.any():
                r["by_position"][f"{lo}-{hi or 'end'}"] = {"latents": int(m.sum()), "coherent": round(float(coherent[m].mean()), 3),
                                                        "beyond_a_word": round(float((coherent & ~shared)[m].mean()), 3)}
        r["first_latents"] = [{"latent": j, "units": ts} for j, ts in rows[:12]]
        out["saes"][name] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="demo")
    ap.add_argument("--min-docs", type=int, default=5)
    ap.add_argument("--judge", default=None, help="sentence-transformers model judging semantic coherence "
                                                  "(default: the index's embedder - not independent of the concept family)")
    ap.add_argument("--sae", action="append", default=[], help="NAME=PATH of a concept SAE (with --units; repeat)")
    ap.add_argument("--units", default=None, help="a train-sae --family concept unit cache (with --sae)")
    ap.add_argument("--n-units", type=int, default=30_000)
    ap.add_argument("--name", default="latent_coherence-units")
    args = ap.parse_args()
    from indexer.encode.embedder import DEFAULT_EMBEDDER, Embedder
    from indexer.encode.recipe import read_manifest
    from indexer.store import open_store

    if args.sae:
        judge = Embedder(args.judge or DEFAULT_EMBEDDER)
        saes = dict(spec.split("=", 1) for spec in args.sae)
        result = {"judge": Path(args.judge or DEFAULT_EMBEDDER).name, "examples": TOP,
                  **unit_coherence(saes, Path(args.units), judge, args.n_units)}
        write_result(args.name, result)
        return
    with open_store(args.index) as store:
        latents = [p for p in store.get_latents() if p.payload.get("doc_count", 0) >= args.min_docs]
        recipe = read_manifest(store).recipe
    result = {"index": args.index, "documents_min": args.min_docs,
              "sae": {"path": recipe.sae.path, "hash": recipe.sae.hash, "d_sae": recipe.sae.d_sae, "k": recipe.sae.k}}
    token = [p for p in latents if p.payload.get("family", "token") == "token"]
    result.update(surface_coherence(token))  # the token family's surface measure, as before
    judge = args.judge or DEFAULT_EMBEDDER
    result["semantic"] = {"judge": Path(judge).name, "examples": TOP, **semantic_coherence(latents, Embedder(judge))}
    write_result(f"latent_coherence-{args.index}", result)


if __name__ == "__main__":
    main()
