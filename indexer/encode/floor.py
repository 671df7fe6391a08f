"""Per-latent reference strength for the pooling noise floor, measured on the SAE's own corpus.

The noise floor (see :mod:`indexer.encode.pooling`) drops a pooled activation below ``floor x`` the
latent's typical document-level strength. "Typical" must be a property of the SAE, not of one
index: an index-relative median moves as the index grows, so stored vectors and pre-computed
counts would go stale. This module computes, once per SAE, each latent's median max-pooled
activation over the documents of a reference corpus where it fires, and ships it beside the SAE
(``pooling_reference.npy``, float32, d_sae values).

    python -m indexer.encode.floor CORPUS [--sae DIR] [--docs 2000] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from indexer.core.errors import InputError

REFERENCE_FILE = "pooling_reference.npy"


def load_reference(sae_dir: str | Path, d_sae: int) -> np.ndarray | None:
    """The SAE's reference strengths, or None when the SAE ships none (then no floor is applied)."""
    path = Path(sae_dir) / REFERENCE_FILE
    if not path.exists():
        return None
    ref = np.load(path, allow_pickle=False).astype(np.float32)
    if ref.shape != (d_sae,):
        raise InputError(f"{path}: shape {ref.shape} does not match the SAE's d_sae={d_sae}")
    return ref


def compute_reference(indexer, texts: list[str], batch_docs: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Median max-pooled activation per latent over the documents where it fires, and how many
    documents that median rests on (latents that never fired get 0: no floor for them)."""
    from indexer.encode.pooling import encode_and_pool

    d_sae = indexer.sae.d_sae
    lat_chunks, val_chunks = [], []
    t0, done = time.time(), 0
    for s in range(0, len(texts), batch_docs):
        chunk = texts[s : s + batch_docs]
        for batch in indexer.reader.encode(chunk):
            for doc in encode_and_pool(indexer.sae, batch.states, batch.offsets):
                lat_chunks.append(doc.indices.astype(np.int32))
                val_chunks.append(doc.values.astype(np.float32))
        done += len(chunk)
        print(f"reference: {done}/{len(texts)} docs ({done / max(time.time() - t0, 1e-6):.1f} docs/s)", file=sys.stderr, flush=True)
    lat = np.concatenate(lat_chunks)
    val = np.concatenate(val_chunks)
    order = np.lexsort((val, lat))
    lat, val = lat[order], val[order]
    starts = np.searchsorted(lat, np.arange(d_sae))
    ends = np.searchsorted(lat, np.arange(d_sae), side="right")
    n = ends - starts
    med = np.zeros(d_sae, np.float32)
    has = n > 0
    mid = starts[has] + (n[has] - 1) // 2
    med[has] = val[mid]
    return med, n


def main() -> None:
    from indexer.labels.dictionary.collect import read_texts
    from indexer.ingest.pipeline import Indexer
    from indexer.encode.sae import DEFAULT_SAE_DIR

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--sae", default=str(DEFAULT_SAE_DIR))
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--skip", type=int, default=20000, help="start after the documents the dictionary was built on")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    texts = []
    for i, t in enumerate(read_texts(args.corpus)):
        if i < args.skip:
            continue
        texts.append(t)
        if len(texts) >= args.docs:
            break
    indexer = Indexer.from_options(args.sae)
    med, n = compute_reference(indexer, texts)
    out = args.out or Path(args.sae) / REFERENCE_FILE
    np.save(out, med)
    print(f"wrote {out}: {int((n > 0).sum())} latents with a reference, median support {int(np.median(n[n > 0]))} docs",
          file=sys.stderr)


if __name__ == "__main__":
    main()
