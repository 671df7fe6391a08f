"""Per-latent statistics from one scan of an index: document frequency, activation quantiles
(p90 normalises search scores), the top-activating documents and a few negatives.

Statistics only: examples, labels and their embeddings are built from these by
:mod:`indexer.labels.refresh`, run after every ingest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from indexer.encode.recipe import read_manifest
from indexer.store import Store
from indexer.store.columns import fresh_copy

N_TOP = 20
DUPLICATE_SLACK = 5  # extra top documents read so that N_TOP examples remain after duplicates go
N_NEG = 5
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
BLOCK_NNZ = 40_000_000  # non-zeros held at once while computing latent statistics (~400 MB)
N_BACKGROUND = 3000  # documents sampled for background word statistics and label quality


@dataclass
class Scan:
    """The index's pooled vectors for latent statistics: doc ids in canonical order, and the
    non-zeros delivered one block of latents at a time (memory stays ~BLOCK_NNZ x 10 bytes
    whatever the index size; a 1M-document index has ~1.5 billion non-zeros)."""

    doc_ids: list[str]
    blocks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]]  # (latent, value, row) per block


def scan_index(store: Store, progress: bool = False, block_nnz: int = BLOCK_NNZ) -> Scan:
    """Read the columnar copy (rebuilt from Qdrant if stale): one pass for ids and per-latent
    counts, then one pass per block of latents holding at most ``block_nnz`` non-zeros."""
    copy = fresh_copy(store, read_manifest(store).recipe, progress=progress)
    doc_ids: list[str] = []
    keys = []
    counts = np.zeros(copy.d_sae, np.int64)
    for shard in copy.iter_shards():
        doc_ids.extend(shard.doc_ids())
        keys.append(np.asarray(shard.order))
        counts += np.bincount(shard.indices, minlength=copy.d_sae)
    # Rows in canonical order (by Qdrant point id), so examples, negatives and labels do not
    # depend on the order documents were written in (an import or a rebuild gives the same).
    perm = np.argsort(np.concatenate(keys) if keys else np.zeros(0, np.uint64), kind="stable")
    rank = np.empty_like(perm)
    rank[perm] = np.arange(len(perm))
    ids = [doc_ids[i] for i in perm]
    cuts = [0]
    acc = 0
    for lat, c in enumerate(counts.tolist()):
        if acc and acc + c > block_nnz:
            cuts.append(lat)
            acc = 0
        acc += c
    cuts.append(copy.d_sae)

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            lat_l, val_l, row_l = [], [], []
            base = 0
            for shard in copy.iter_shards():
                idx = np.asarray(shard.indices)
                pos = np.flatnonzero((idx >= lo) & (idx < hi)) if (lo, hi) != (0, copy.d_sae) else np.arange(len(idx))
                lat_l.append(idx[pos].astype(np.int32))
                val_l.append(np.asarray(shard.values[pos], np.float32))
                row_l.append(rank[base + np.searchsorted(shard.indptr, pos, side="right") - 1].astype(np.int32))
                base += shard.rows
            cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
            yield cat(lat_l, np.int32), cat(val_l, np.float32), cat(row_l, np.int32)

    return Scan(ids, blocks)


def latent_statistics(scan: Scan, rng: np.random.Generator) -> dict[int, dict]:
    """latent -> doc_count, doc_freq, quantiles (+ max), top rows and values (strongest first;
    ties in canonical row order) and up to N_NEG rows of documents it is absent from."""
    n_docs = len(scan.doc_ids)
    stats: dict[int, dict] = {}
    for lat_b, val_b, row_b in scan.blocks():
        order = np.lexsort((row_b, -val_b, lat_b))  # by latent, strongest first; ties: canonical row order
        lat, val, row = lat_b[order], val_b[order], row_b[order]
        bounds = np.flatnonzero(np.diff(lat)) + 1
        starts = np.concatenate([[0], bounds]) if len(lat) else np.zeros(0, int)
        ends = np.concatenate([bounds, [len(lat)]]) if len(lat) else np.zeros(0, int)
        for s, e in zip(starts, ends):
            latent = int(lat[s])
            vals = val[s:e]
            top_rows = row[s : min(e, s + N_TOP + DUPLICATE_SLACK)]
            neg: list[int] = []
            if e - s < n_docs:
                cands = rng.integers(0, n_docs, size=4 * N_NEG)
                absent = ~np.isin(cands, row[s:e])  # one vectorised test, not a set of every row per latent
                for cand, ok in zip(cands.tolist(), absent.tolist()):
                    if ok and cand not in neg:
                        neg.append(cand)
                    if len(neg) >= N_NEG:
                        break
            stats[latent] = {
                "doc_count": int(e - s),
                "doc_freq": float((e - s) / n_docs),
                "quantiles": {name: float(np.quantile(vals, q)) for name, q in QUANTILES.items()} | {"max": float(vals[0])},
                "top_rows": top_rows.tolist(),
                "top_values": vals[: len(top_rows)].tolist(),
                "neg_rows": neg,
            }
    return stats


def fetch_payloads(store: Store, doc_ids: list[str], rows: list[int]) -> dict[int, dict]:
    """row -> payload of the documents at ``rows`` (of ``doc_ids``), fetched in pages."""
    payloads: dict[int, dict] = {}
    for s in range(0, len(rows), 500):
        page = rows[s : s + 500]
        for r, h in zip(page, store.get_docs([doc_ids[r] for r in page])):
            payloads[r] = h.payload
    return payloads
