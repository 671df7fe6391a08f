"""Indexing throughput: the reader's forward pass alone vs the whole pipeline, same documents, one run.

    python benchmarks/index_throughput.py [--docs 300]

Prints tokens/s of (1) the reader forward pass alone, (2) reader + SAE + max-pool, (3) the whole
pipeline incl. the dense baseline embedding and the Qdrant Edge write; their ratios; padding
fraction; truncated documents; peak RSS. Writes benchmarks/results/index_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result, Timer, peak_rss_mb, real_texts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=300)
    args = ap.parse_args()
    os.environ.setdefault("SAEDEX_MODEL_CACHE", str(Path.home() / ".saedex" / "models"))
    os.environ["SAEDEX_HOME"] = tempfile.mkdtemp(prefix="saedex-bench-")
    from indexer.corpus import Record
    from indexer.embedder import get_embedder
    from indexer.pipeline import Indexer, IndexReport
    from indexer.pooling import encode_and_pool
    from indexer.store import open_store

    texts, src = real_texts(args.docs)
    ix = Indexer()
    reader = ix.reader
    get_embedder()
    list(reader.encode(texts[:16]))  # warm-up

    with Timer() as t_fwd:
        n_tok = n_pad = n_trunc = 0
        for b in reader.encode(texts):
            n_tok += b.n_tokens
            n_pad += b.n_padded
            n_trunc += b.truncated
    with Timer() as t_sae:
        for b in reader.encode(texts):
            encode_and_pool(ix.sae, b.states, b.offsets)
    store = open_store("bench")
    ix.prepare_store(store, "bench")
    recs = [Record(id=str(i), text=t, fields={}) for i, t in enumerate(texts)]
    rep = IndexReport(index="bench", dataset="bench")
    with Timer() as t_all:
        for s in range(0, len(recs), 128):
            store.upsert_docs(ix.encode_records(recs[s : s + 128], "bench", rep))
    store.close()
    res = {
        "docs": len(texts), "source": src, "tokens": n_tok, "reader": ix.reader_cfg.as_dict() | {"dtype": str(reader.dtype)},
        "sae": {"d_sae": ix.sae.d_sae, "k": ix.sae.cfg.get("k")},
        "forward_tok_s": round(n_tok / t_fwd.s, 1),
        "forward_plus_sae_tok_s": round(n_tok / t_sae.s, 1),
        "pipeline_tok_s": round(n_tok / t_all.s, 1),
        "ratio_sae_vs_forward": round(t_fwd.s / t_sae.s, 3),
        "ratio_pipeline_vs_forward": round(t_fwd.s / t_all.s, 3),
        "padding_fraction": round(n_pad / (n_tok + n_pad), 4),
        "truncated_docs": n_trunc,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    write_result("index_throughput", res)


if __name__ == "__main__":
    main()
