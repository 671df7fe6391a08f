"""Indexing throughput on full-length articles: the fp32 reader forward alone vs the whole pipeline
with the chosen defaults, same documents, same run; plus the fast paths' agreement with fp32.

    python benchmarks/index_throughput.py [--docs 200] [--precisions bf16]

Measures, on the same real documents (BBC articles, whole):
(1) reader forward alone, fp32 reference (windows, no SAE);
(2) the whole pipeline with the defaults (precision auto, windows, SAE encode, max-pool, the
    concept family's sentence units through MiniLM and its SAE, MiniLM dense vector, Qdrant Edge
    write), and the same with the token family only (what the concept family costs);
(3) the previous release's pipeline (fp32, documents cut at 128 tokens) on the same documents;
(4) for each fast precision: pooled vectors vs the fp32 pipeline's (cosine, top-10 latent
    overlap, Jaccard of the non-zero sets) and its reader+SAE tokens/s.
Tokens/s, docs/s, padding fraction, window overhead, truncated documents, peak RSS.
Writes benchmarks/results/index_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Timer, peak_rss_mb, real_texts, write_result  # noqa: E402


def pooled(ix, texts):
    """Reader + SAE + max-pool of texts -> list of {latent: value}; also (tokens, computed, padded, truncated)."""
    from indexer.encode.pooling import encode_and_pool

    out = [None] * len(texts)
    n = [0, 0, 0, 0]
    for b in ix.reader.encode(texts):
        for i, p in zip(b.indices, encode_and_pool(ix.sae, b.states, b.offsets)):
            out[i] = dict(zip(p.indices.tolist(), p.values.tolist()))
        n[0] += b.n_tokens
        n[1] += b.n_computed
        n[2] += b.n_padded
        n[3] += b.truncated
    return out, n


def timed_pipeline(ix, recs, name: str):
    """Index ``recs`` into a fresh store ``name`` with ``ix`` (models loaded first); (report, seconds)."""
    from indexer.ingest.pipeline import IndexReport
    from indexer.store import open_store

    list(ix.reader.encode([r.text for r in recs[:4]]))
    store = open_store(name)
    ix.prepare_store(store, name)
    rep = IndexReport(index=name, dataset="bench")
    with Timer() as t:
        for s in range(0, len(recs), 128):
            store.upsert_docs(ix.encode_records(recs[s : s + 128], "bench", rep))
    store.close()
    return rep, t.s


def agreement(ref: list[dict], other: list[dict]) -> dict:
    cos, top, jac = [], [], []
    for a, b in zip(ref, other):
        keys = sorted(set(a) | set(b))
        va = np.array([a.get(k, 0.0) for k in keys])
        vb = np.array([b.get(k, 0.0) for k in keys])
        cos.append(float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb) + 1e-12)))
        ta = set(sorted(a, key=a.get, reverse=True)[:10])
        tb = set(sorted(b, key=b.get, reverse=True)[:10])
        top.append(len(ta & tb) / 10)
        jac.append(len(set(a) & set(b)) / max(len(set(a) | set(b)), 1))
    return {"cosine_mean": round(float(np.mean(cos)), 4), "cosine_min": round(float(np.min(cos)), 4),
            "top10_overlap": round(float(np.mean(top)), 4), "nonzero_jaccard": round(float(np.mean(jac)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--precisions", default="bf16")
    ap.add_argument("--concept", default=None, help="also time the pipeline with this concept SAE (e.g. one on mpnet units)")
    ap.add_argument("--name", default="index_throughput", help="results file name (benchmarks/results/NAME.json)")
    args = ap.parse_args()
    os.environ.setdefault("SAEDEX_MODEL_CACHE", str(Path.home() / ".cache" / "saedex-models"))
    os.environ["SAEDEX_HOME"] = tempfile.mkdtemp(prefix="saedex-bench-")
    from indexer.ingest.corpus import Record
    from indexer.encode.embedder import get_embedder
    from indexer.encode.reader import ReaderConfig
    from indexer.ingest.pipeline import Indexer

    texts, src = real_texts(args.docs)
    res: dict = {"docs": len(texts), "source": src + " (whole articles)", "cpu_count": os.cpu_count()}

    # (1) fp32 reader forward alone
    ref = Indexer(ReaderConfig(precision="fp32"))
    list(ref.reader.encode(texts[:4]))
    with Timer() as t:
        n_tok = n_comp = n_pad = n_trunc = 0
        for b in ref.reader.encode(texts):
            n_tok += b.n_tokens
            n_comp += b.n_computed
            n_pad += b.n_padded
            n_trunc += b.truncated
    res["tokens"] = n_tok
    res["forward_fp32"] = {"tok_s": round(n_tok / t.s, 1), "docs_s": round(len(texts) / t.s, 2), "seconds": round(t.s, 1)}
    res["window_overhead"] = round(n_comp / n_tok, 3)
    res["padding_fraction"] = round(n_pad / max(n_comp, 1), 4)
    res["truncated_docs"] = n_trunc
    res["reader"] = ref.reader_cfg.recipe()
    with Timer() as t:
        ref_vecs, _ = pooled(ref, texts)
    res["forward_plus_sae_fp32"] = {"tok_s": round(n_tok / t.s, 1)}

    # (2) the whole pipeline with the defaults
    get_embedder()
    ix = Indexer(ReaderConfig())
    recs = [Record(id=str(i), text=t_, fields={}) for i, t_ in enumerate(texts)]
    rep, secs = timed_pipeline(ix, recs, "bench")
    res["pipeline_default"] = {"precision": ix.reader.precision, "embedder_precision": get_embedder().precision,
                               "tok_s": round(rep.tokens / secs, 1), "docs_s": round(len(texts) / secs, 2), "seconds": round(secs, 1)}
    res["ratio_pipeline_vs_fp32_forward"] = round(res["pipeline_default"]["tok_s"] / res["forward_fp32"]["tok_s"], 3)

    # (2b) the same pipeline with the token family only: what the concept family costs
    rep_tok, secs = timed_pipeline(Indexer(ReaderConfig(), concept=None), recs, "bench_token")
    res["pipeline_token_family_only"] = {"tok_s": round(rep_tok.tokens / secs, 1), "seconds": round(secs, 1)}
    res["ratio_both_families_vs_token_only_time"] = round(res["pipeline_default"]["seconds"] / secs, 3)
    if args.concept:  # (2c) another concept SAE (its own embedder), same records, same run
        rep_c, secs_c = timed_pipeline(Indexer(ReaderConfig(), concept=args.concept), recs, "bench_concept")
        res["pipeline_other_concept"] = {"concept": args.concept, "tok_s": round(rep_c.tokens / secs_c, 1), "seconds": round(secs_c, 1)}
        res["ratio_other_concept_vs_token_only_time"] = round(secs_c / secs, 3)

    # (3) the previous release's pipeline: fp32, documents cut at 128 tokens
    rep_old, secs = timed_pipeline(Indexer(ReaderConfig(precision="fp32", max_tokens=128, window=128, overlap=0)), recs, "bench_old")
    res["pipeline_previous_release"] = {"tok_s": round(rep_old.tokens / secs, 1), "tokens": rep_old.tokens,
                                        "note": "fp32 reader and SAE, 128-token cut (dense vectors as configured now)"}
    res["speedup_vs_previous_release"] = round(res["pipeline_default"]["tok_s"] / res["pipeline_previous_release"]["tok_s"], 3)

    # (4) agreement of the fast paths with fp32
    res["agreement_with_fp32"] = {}
    for prec in [p for p in args.precisions.split(",") if p]:
        fx = Indexer(ReaderConfig(precision=prec))
        list(fx.reader.encode(texts[:4]))
        with Timer() as t:
            vecs, _ = pooled(fx, texts)
        res["agreement_with_fp32"][prec] = agreement(ref_vecs, vecs) | {"reader_plus_sae_tok_s": round(n_tok / t.s, 1)}
    res["nonzero_latents_per_doc"] = round(float(np.mean([len(v) for v in ref_vecs])), 1)
    res["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_result(args.name, res)


if __name__ == "__main__":
    main()
