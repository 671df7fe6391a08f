"""Which sentence embedder should the concept family use? Concept SAEs side by side, same data, one run.

    saedex train-sae ../shared/data/sae_train.jsonl.gz --family concept --units 100000 --holdout-docs 5000 \
        --out /tmp/cs_minilm                                     # and again with --embedder PATH/all-mpnet-base-v2
    python benchmarks/concept_embedders.py --sae minilm=/tmp/cs_minilm --sae mpnet=/tmp/cs_mpnet

For each concept SAE (its embedder is the one its cfg names), on real text of ../shared:
- training report: held-out FVU, dead latents; its dictionary's labels where one was built;
- cost: sentence units embedded + SAE-encoded + max-pooled per second, as indexing does it (batches
  of 16 filled to size), on whole BBC articles;
- sentiment, Rotten Tomatoes fresh vs rotten opinions (the dev index's sample): a 5-fold logistic
  probe on the documents' binary concept codes (the most any clustering of these codes could
  separate), and on the embedder's own whole-text vector (what the SAE starts from); an
  unsupervised lean: documents' codes through the decoder rows' cosine to "positive opinion" minus
  "negative opinion" (AUC, and 2-means accuracy);
- topic, BBC articles: k-means (k = 5) on the documents' binary codes (accuracy under the best
  matching).
Writes benchmarks/results/concept_embedders.json (``--name``: another file; the width table is concept_width).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SHARED, write_result  # noqa: E402

POLES = ("positive opinion", "negative opinion")


def rt_opinions(n: int = 3000) -> tuple[list[str], np.ndarray]:
    """The dev index's Rotten Tomatoes sample (shuffled with seed 0, first n), opinions only."""
    rows = [json.loads(line) for line in (SHARED / "rotten_tomatoes.jsonl").read_text().split("\n") if line.strip()]
    random.Random(0).shuffle(rows)
    rows = [r for r in rows[:n] if r["category"] in ("fresh", "rotten")]
    return [r["text"] for r in rows], np.array([r["category"] == "fresh" for r in rows])


def bbc(n: int) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (SHARED / "bbc_news.jsonl").read_text().split("\n") if line.strip()]
    random.Random(0).shuffle(rows)
    return [r["text"] for r in rows[:n]], [r["label"] for r in rows[:n]]


def codes(encoder, texts: list[str]) -> tuple[np.ndarray, float]:
    """(documents x d_sae) max-pooled concept activations, as indexing computes them (the
    encoder's own concept path), and sentence units per second."""
    t0 = time.perf_counter()
    pooled = encoder.encode_units(texts)
    secs = time.perf_counter() - t0
    X = np.zeros((len(texts), encoder.concept.cfg.d_sae), np.float32)
    for i, p in enumerate(pooled):
        X[i, p.indices] = p.values
    return X, sum(len(p.offsets) for p in pooled) / secs


def probe_accuracy(F: np.ndarray, y: np.ndarray) -> float:
    """5-fold accuracy of a logistic probe (C = 0.1) on features F: the most a clustering of F could separate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    return round(float(cross_val_score(LogisticRegression(C=0.1, max_iter=3000), F, y, cv=5).mean()), 3)


def topic_kmeans_accuracy(X: np.ndarray, labels: list[str], k: int = 5) -> float:
    """k-means of documents' binary codes (rows L2-normalised), accuracy under the best matching."""
    from sklearn.cluster import KMeans

    from analyses.clustering import cluster_scores

    B = (X > 0).astype(np.float32)
    B /= np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    return cluster_scores(KMeans(k, n_init=10, random_state=0).fit_predict(B), labels)["accuracy"]


def one_sae(path: str, rt: tuple, topics: tuple) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import roc_auc_score

    from indexer.encode.embedder import get_embedder, unit_embedder
    from indexer.encode.encoder import Encoder
    from indexer.encode.sae import load_sae

    sae = load_sae(path)
    emb_name = unit_embedder(sae)
    encoder = Encoder(concept=sae)  # embeds units with emb_name, whatever the index embedder
    emb = get_embedder(emb_name)
    emb.encode(["warm up"])
    report = json.loads((Path(path) / "report.json").read_text()) if (Path(path) / "report.json").exists() else {}
    out = {"sae": path, "embedder": Path(emb_name).name, "dim": emb.dim, "d_sae": sae.cfg.d_sae, "k": sae.cfg.metadata.get("training", {}).get("k"),
           "heldout_fvu": report.get("heldout_fvu"), "dead_fraction": report.get("dead_fraction_heldout"),
           "training_units": report.get("training_tokens_available")}
    dpath = Path(path) / "dictionary.json"
    if dpath.exists():
        build = json.loads(dpath.read_text()).get("build", {})
        out["labels"] = {k: build.get(k) for k in ("labelled", "concept", "unclear", "median_quality")}

    texts, y = rt
    X, _ = codes(encoder, texts)
    B = (X > 0).astype(np.float32)
    probe = lambda F: probe_accuracy(F, y)  # noqa: E731
    W = sae.W_dec.detach().float().numpy()
    W = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    P = emb.encode(list(POLES))
    aff = W @ P.T
    aff = aff - aff.mean(axis=1, keepdims=True)
    lean = X @ (aff[:, 0] - aff[:, 1])
    km = KMeans(2, n_init=10, random_state=0).fit_predict(lean[:, None])
    dense = emb.encode(texts, batch_size=64)
    out["sentiment"] = {"opinions": len(texts), "majority": round(float(max(y.mean(), 1 - y.mean())), 3),
                        "probe_codes": probe(B), "probe_dense": probe(dense),
                        "lean_auc": round(float(roc_auc_score(y, lean)), 3),
                        "lean_2means_accuracy": round(float(max((km == y).mean(), (km != y).mean())), 3)}

    texts, labels = topics
    X, units_s = codes(encoder, texts)
    out["topic_kmeans_accuracy"] = topic_kmeans_accuracy(X, labels)
    out["units_per_s"] = round(units_s, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sae", action="append", required=True, help="NAME=PATH of a concept SAE folder (repeat)")
    ap.add_argument("--bbc", type=int, default=500)
    ap.add_argument("--name", default="concept_embedders", help="results file name (benchmarks/results/NAME.json)")
    args = ap.parse_args()
    if not SHARED.exists():
        sys.exit("../shared/data is not available")
    from indexer.encode.reader import set_threads

    set_threads()
    rt, topics = rt_opinions(), bbc(args.bbc)
    res = {"bbc_articles": args.bbc, "saes": {}}
    for spec in args.sae:
        name, path = spec.split("=", 1)
        res["saes"][name] = one_sae(path, rt, topics)
        print(name, json.dumps(res["saes"][name]), flush=True)
    first = res["saes"][args.sae[0].split("=", 1)[0]]
    res["unit_time_vs_first"] = {n: round(first["units_per_s"] / r["units_per_s"], 2) for n, r in res["saes"].items()}
    write_result(args.name, res)


if __name__ == "__main__":
    main()
