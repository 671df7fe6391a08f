"""Which reader layer, and where concepts are lost: linear probes on labelled ../shared texts.

    python benchmarks/layer_probe.py [--n 400]
    python benchmarks/layer_probe.py --sae DIR   # only the SAE view, for another SAE (compare SAEs)

(1) Layers: the residual stream after blocks 3, 6, 9, 12, 15 of the reader (mean ++ max over
    tokens), logistic regression, 5-fold AUC, for sentiment (Rotten Tomatoes fresh vs rotten,
    length-matched opinions) and joke styles (sarcastic, puns, insults tags).
(2) The shipped SAE at its layer (6): the same sentiment probe on the residual (mean, max), the
    SAE's codes (max-pooled as indexed, mean-pooled) and its reconstruction (mean).
Why: the concept dictionary found the shipped SAE's latents mostly lexical; this says whether a
deeper reader layer or the SAE itself is what loses concepts. Writes benchmarks/results/layer_probe.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SHARED, write_result  # noqa: E402

LAYERS = [3, 6, 9, 12, 15]
MAX_TOKENS = 96


def probe_auc(X: np.ndarray, y: np.ndarray, C: float = 0.01) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    Xs = (X - X.mean(0)) / (X.std(0) + 1e-6)
    p = cross_val_predict(LogisticRegression(C=C, max_iter=3000), Xs, y, cv=5, method="predict_proba")[:, 1]
    return round(float(roc_auc_score(y, p)), 3)


def tasks(n: int) -> dict[str, tuple[list[str], np.ndarray]]:
    rng = random.Random(0)
    rt = [json.loads(l) for l in (SHARED / "rotten_tomatoes.jsonl").open()]
    rt = [x for x in rt if x["category"] in ("fresh", "rotten")]
    rng.shuffle(rt)
    rt = rt[:n]
    out = {"sentiment (RT fresh vs rotten)": ([x["text"] for x in rt], np.array([x["category"] == "fresh" for x in rt]))}
    jokes = [json.loads(l) for l in (SHARED / "jokes.jsonl").open()]
    rng.shuffle(jokes)
    for tag in ("sarcastic", "puns", "insults"):
        pos = [x for x in jokes if tag in x.get("tags", [])][: int(n * 0.375)]
        neg = [x for x in jokes if tag not in x.get("tags", [])][: n - len(pos)]
        out[f"jokes: {tag}"] = ([x["text"] for x in pos + neg], np.array([1] * len(pos) + [0] * len(neg)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--sae", default=None, help="SAE folder (default: the shipped one); with it, only the SAE view is measured")
    args = ap.parse_args()
    if not (SHARED / "rotten_tomatoes.jsonl").exists():
        sys.exit("../shared/data is not available")
    from indexer.encode.reader import Reader, ReaderConfig
    from indexer.encode.sae import load_sae

    torch.set_num_threads(2)
    sae = load_sae(args.sae)
    sae_layer = int(sae.cfg.metadata.get("saedex_layer", 6))
    layers = [] if args.sae else LAYERS
    reader = Reader(ReaderConfig(layer=max(layers + [sae_layer]), precision="fp32", max_tokens=MAX_TOKENS))
    result: dict = {"layers": layers, "sae_path": args.sae or "default", "reader": reader.config.model, "texts_per_task": args.n, "by_layer": {}, "sae": {}}
    for name, (texts, y) in tasks(args.n).items():
        t = time.time()
        feats: dict[str, list] = {f"layer {L}": [] for L in layers}
        sae_feats: dict[str, list] = {k: [] for k in ("residual mean", "residual max", "SAE codes max (indexed)",
                                                       "SAE codes mean", "SAE reconstruction mean")}
        for text in texts:
            ids = [reader.bos_id] + reader.tokenizer(text, add_special_tokens=False)["input_ids"][:MAX_TOKENS]
            with torch.inference_mode():
                hs = reader.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
                for L in layers:
                    h = hs[L][0, 1:].float()
                    feats[f"layer {L}"].append(torch.cat([h.mean(0), h.max(0).values]).numpy())
                h = hs[sae_layer][0, 1:].float()
                z = sae.encode(h)
                sae_feats["residual mean"].append(h.mean(0).numpy())
                sae_feats["residual max"].append(h.max(0).values.numpy())
                sae_feats["SAE codes max (indexed)"].append(z.max(0).values.numpy())
                sae_feats["SAE codes mean"].append(z.mean(0).numpy())
                sae_feats["SAE reconstruction mean"].append((z @ sae.W_dec).mean(0).numpy())
        result["by_layer"][name] = {k: probe_auc(np.array(v), y) for k, v in feats.items() if v}
        result["sae"][name] = {k: probe_auc(np.array(v), y) for k, v in sae_feats.items()}
        print(name, result["by_layer"][name], result["sae"][name], f"{time.time() - t:.0f} s", flush=True)
    write_result("layer_probe" if args.sae is None else f"layer_probe-{Path(args.sae).name}", result)


if __name__ == "__main__":
    main()
