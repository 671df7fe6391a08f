"""Could the concept family live in the reader's own space? A measured "no" (one run).

    python benchmarks/reader_concepts.py [--per-source 13000] [--work /tmp/reader_concepts]

The concept family embeds every sentence again (MiniLM: 1.23x the token family's indexing time;
mpnet: 2.17x). The reader already computes layer-6 states of every token, and a linear probe on
their mean over a Rotten Tomatoes opinion separates fresh from rotten at 0.82 (MiniLM's vector
0.75), so a concept SAE on *sentence means of the reader's states* would cost almost nothing at
indexing. This script measures whether its latents are concepts:

1. sentence units of ``sae_train.jsonl.gz``, balanced over its eight sources (``--per-source``
   distinct units each), read in document context exactly as indexing reads (bf16, windows), each
   unit the mean of its tokens' layer-6 states; 8 of 640 dimensions hold 84% of the variance
   (the residual stream's massive activations), so units are standardised per dimension;
2. a TopK SAE of the concept family's recipe (2,048 latents, k = 8, 9,000 steps of 512);
3. beside the shipped MiniLM concept SAE, the same measures: a 5-fold logistic probe on the binary
   codes of the 2,783 Rotten Tomatoes opinions (fresh vs rotten); an unsupervised lean (each
   latent's five top units embedded by MiniLM, cosine to "positive opinion" minus "negative
   opinion"; AUC and 2-means accuracy of the documents' summed leans); k-means (k = 5) of 500 BBC
   articles' binary codes (rows L2-normalised; probe and k-means as ``concept_embedders.py``); and
   20 random latents' top units to read.
Writes benchmarks/results/reader_concepts.json. Resumable: the unit cache and SAE stay in --work.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SHARED, write_result  # noqa: E402
from benchmarks.concept_embedders import POLES, bbc, probe_accuracy, rt_opinions, topic_kmeans_accuracy  # noqa: E402

HOLDOUT = 5000
SHARD = 20000


def unit_means(text: str, states: np.ndarray, offsets: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    """Mean reader state of each sentence unit (tokens whose first character falls in its span)."""
    from indexer.encode.units import split_units

    starts = offsets[:, 0] if len(offsets) else np.zeros(0, np.int64)
    means, texts = [], []
    for s, e in split_units(text):
        a, b = np.searchsorted(starts, s), np.searchsorted(starts, e)
        if b > a:
            means.append(states[a:b].mean(0))
            texts.append(" ".join(text[s:e].split()))
    return means, texts


def extract(work: Path, per_source: int, reader) -> None:
    """Standardised unit means of sae_train, balanced over sources, as shards (skipped when done)."""
    if (work / "units.txt").exists():
        return
    by_source: dict[str, list[str]] = {}
    with gzip.open(SHARED / "sae_train.jsonl.gz", "rt") as f:
        for line in f:
            r = json.loads(line)
            by_source.setdefault(r["source"], []).append(r["text"])
    rng = random.Random(0)
    seen: set[str] = set()
    X, U = [], []
    t0 = time.time()
    for src in sorted(by_source):
        docs = by_source[src][:]
        rng.shuffle(docs)
        got, i = 0, 0
        while got < per_source and i < len(docs):
            chunk = docs[i : i + 32]
            i += 32
            for batch in reader.encode(chunk):
                for d, st, off in zip(batch.indices, batch.states, batch.offsets):
                    for v, u in zip(*unit_means(chunk[d], st, off)):
                        if u.lower() not in seen:
                            seen.add(u.lower())
                            X.append(v.astype(np.float32))
                            U.append(u)
                            got += 1
        print(f"{src}: {got:,} units ({time.time() - t0:.0f} s)", flush=True)
    order = list(range(len(X)))
    rng.shuffle(order)
    A = np.stack([X[j] for j in order])
    U = [U[j] for j in order]
    mu, sd = A.mean(0), A.std(0) + 1e-3
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "mu.npy", mu)
    np.save(work / "sd.npy", sd)
    Z = ((A - mu) / sd).astype(np.float16)
    np.save(work / "holdout.npy", Z[-HOLDOUT:])
    for s in range(0, len(Z) - HOLDOUT, SHARD):
        np.save(work / f"shard_{s // SHARD:05d}.npy", Z[s : min(s + SHARD, len(Z) - HOLDOUT)])
    (work / "units.txt").write_text("\n".join(u.replace("\n", " ") for u in U[:-HOLDOUT]) + "\n")


def measures(code_fn, top_units: dict[int, list[str]], d_sae: int, emb) -> dict:
    """Probe, unsupervised lean and BBC k-means of one concept SAE (``code_fn``: texts -> codes)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import roc_auc_score

    texts, y = rt_opinions()
    B = (code_fn(texts) > 0).astype(np.float32)
    P = emb.encode(list(POLES))
    lean = np.zeros(d_sae)
    for j, units in top_units.items():
        V = emb.encode(units[:5])
        lean[j] = float((V @ P[0]).mean() - (V @ P[1]).mean())
    score = B @ lean
    km = KMeans(2, n_init=10, random_state=0).fit(score.reshape(-1, 1))
    bt, bl = bbc(500)
    return {"probe_on_codes": probe_accuracy(B, y),
            "lean_auc": round(float(roc_auc_score(y, score)), 3),
            "lean_2means": round(float(max(np.mean(km.labels_ == y), np.mean(km.labels_ != y))), 3),
            "bbc_kmeans": topic_kmeans_accuracy(code_fn(bt), bl), "units_per_doc_rt": float(B.sum(1).mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-source", type=int, default=13000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/reader_concepts"))
    args = ap.parse_args()
    if not (SHARED / "sae_train.jsonl.gz").exists():
        sys.exit("../shared/data is not available")
    from indexer.encode.embedder import get_embedder
    from indexer.encode.encoder import Encoder
    from indexer.encode.reader import Reader, ReaderConfig, set_threads
    from indexer.encode.sae import load_sae, shipped_concept_sae
    from indexer.train.trainer import TrainConfig, train_sae

    set_threads()
    reader = Reader(ReaderConfig(layer=6, max_tokens=1024))
    extract(args.work, args.per_source, reader)
    sae_dir = args.work / "sae"
    if not (sae_dir / "report.json").exists():
        train_sae(args.work, sae_dir, TrainConfig(d_sae=2048, k=8, lr=5e-4, batch_tokens=512, max_steps=9000, max_minutes=10,
                                                  dead_tokens=100_000),
                  {"model_name": "reader-layer6-means", "saedex_family": "concept", "saedex_units": "sentence"})
    report = json.loads((sae_dir / "report.json").read_text())
    sae = load_sae(str(sae_dir))
    mu, sd = np.load(args.work / "mu.npy"), np.load(args.work / "sd.npy")

    def reader_codes(texts: list[str]) -> np.ndarray:
        X = np.zeros((len(texts), sae.cfg.d_sae), np.float32)
        for batch in reader.encode(texts):
            for d, st, off in zip(batch.indices, batch.states, batch.offsets):
                m, _ = unit_means(texts[d], st, off)
                if m:
                    with torch.inference_mode():
                        X[d] = sae.encode(torch.from_numpy(((np.stack(m) - mu) / sd).astype(np.float32))).numpy().max(0)
        return X

    units = (args.work / "units.txt").read_text().splitlines()
    S = np.concatenate([np.load(p) for p in sorted(args.work.glob("shard_*.npy"))]).astype(np.float32)
    with torch.inference_mode():
        Z = np.concatenate([sae.encode(torch.from_numpy(S[s : s + 8192])).numpy() for s in range(0, len(S), 8192)])
    top = np.argsort(-Z, axis=0)[:5]
    fires = (Z > 0).sum(0)
    reader_top = {j: [units[i] for i in top[:, j]] for j in range(sae.cfg.d_sae) if fires[j] >= 5}
    emb = get_embedder()
    result = {"units": len(units), "report": {k: v for k, v in report.items() if k != "history"},
              "reader_space": measures(reader_codes, reader_top, sae.cfg.d_sae, emb)}
    print("reader space", result["reader_space"], flush=True)

    enc = Encoder(concept="default")
    shipped = shipped_concept_sae()
    entries = json.loads((Path(__file__).resolve().parents[1] / "indexer/encode/concept_sae/dictionary.json").read_text())["latents"]

    def minilm_codes(texts: list[str]) -> np.ndarray:
        X = np.zeros((len(texts), shipped.cfg.d_sae), np.float32)
        for i, p in enumerate(enc.encode_units(texts)):
            X[i, p.indices] = p.values
        return X

    minilm_top = {int(j): e["top_units"] for j, e in entries.items() if len(e.get("top_units", [])) >= 3}
    result["minilm_shipped"] = measures(minilm_codes, minilm_top, shipped.cfg.d_sae, emb)
    print("MiniLM (shipped)", result["minilm_shipped"], flush=True)
    rng = random.Random(1)
    result["read_these"] = {int(j): reader_top[j] for j in rng.sample(sorted(reader_top), 20)}
    write_result("reader_concepts", result)


if __name__ == "__main__":
    main()
