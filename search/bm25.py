"""BM25 baseline over an index's texts, built once and cached next to the index.

rank-bm25 (``BM25Okapi``) supplies the statistics and the idf (with its epsilon floor), but its
``get_scores`` loops over every document in Python for every query term. We precompute the
per-(term, doc) BM25 weights into a scipy CSR matrix instead, so a query is a sum of a few
sparse rows: identical scores, measured ~100x faster at 10k documents (benchmarks/search_latency.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from indexer.store import Filter, Store

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@dataclass
class BM25Index:
    doc_ids: list[str]
    vocab: dict[str, int]
    weights: sp.csr_matrix  # (terms, docs)
    key: str

    def scores(self, query: str) -> np.ndarray:
        rows = [self.vocab[t] for t in tokenize(query) if t in self.vocab]
        if not rows:
            return np.zeros(len(self.doc_ids), dtype=np.float32)
        return np.asarray(self.weights[rows].sum(axis=0)).ravel()

    def top(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        s = self.scores(query)
        if allowed is not None:
            s = np.where(allowed, s, -np.inf)
        k = min(k, len(s))
        if k <= 0:
            return []
        idx = np.argpartition(-s, k - 1)[:k]
        idx = idx[np.argsort(-s[idx], kind="stable")]
        return [(int(i), float(s[i])) for i in idx if np.isfinite(s[i]) and s[i] > 0]


def build_bm25(doc_ids: list[str], texts: list[str], key: str = "", k1: float = 1.5, b: float = 0.75) -> BM25Index:
    from rank_bm25 import BM25Okapi

    corpus = [tokenize(t) for t in texts]
    if not any(corpus):  # an empty index (a failed first ingest leaves one): rank_bm25 divides by zero
        return BM25Index(list(doc_ids), {}, sp.csr_matrix((0, len(doc_ids)), dtype=np.float32), key)
    bm = BM25Okapi(corpus, k1=k1, b=b)
    vocab = {t: i for i, t in enumerate(sorted(bm.idf))}
    rows, cols, vals = [], [], []
    avgdl = bm.avgdl
    for d, freqs in enumerate(bm.doc_freqs):
        dl = bm.doc_len[d]
        norm = k1 * (1 - b + b * dl / avgdl)
        for term, tf in freqs.items():
            rows.append(vocab[term])
            cols.append(d)
            vals.append(bm.idf[term] * tf * (k1 + 1) / (tf + norm))
    w = sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(len(vocab), len(doc_ids)))
    return BM25Index(doc_ids=list(doc_ids), vocab=vocab, weights=w, key=key)


def save_bm25(bm: BM25Index, path) -> None:
    """An ``.npz`` of plain arrays (never a pickle: a cache file planted in an index folder must
    not be able to run code when the server loads it)."""
    terms = np.array(sorted(bm.vocab, key=bm.vocab.get), dtype=str)
    w = bm.weights.tocsr()
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, doc_ids=np.array(bm.doc_ids, dtype=str), terms=terms, data=w.data, indices=w.indices, indptr=w.indptr,
             shape=np.array(w.shape, np.int64), key=np.array(bm.key))
    tmp.replace(path)


def load_bm25(path) -> BM25Index:
    with np.load(path, allow_pickle=False) as z:
        shape = tuple(int(x) for x in z["shape"])
        w = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
        return BM25Index(doc_ids=z["doc_ids"].tolist(), vocab={t: i for i, t in enumerate(z["terms"].tolist())}, weights=w,
                         key=str(z["key"]))


def load_or_build_bm25(store: Store) -> BM25Index:
    """Cached per index; rebuilt when the document count changes (indexes only grow)."""
    key = f"{store.count()}"
    path = store.cache_file("bm25.npz")
    if path.exists():
        try:
            cached = load_bm25(path)
            if cached.key == key:
                return cached
        except Exception:  # noqa: BLE001 - a stale/corrupt cache is simply rebuilt
            pass
    ids, texts = [], []
    for hits in store.scroll_docs(with_sparse=False, payload_fields=["doc_id", "text"], batch=2000):
        for h in hits:
            ids.append(h.doc_id)
            texts.append(h.payload.get("text", ""))
    bm = build_bm25(ids, texts, key=key)
    save_bm25(bm, path)
    return bm


def allowed_mask(store: Store, bm: BM25Index, flt: Filter | None) -> np.ndarray | None:
    if flt is None or flt.is_empty():
        return None
    pos = {d: i for i, d in enumerate(bm.doc_ids)}
    mask = np.zeros(len(bm.doc_ids), dtype=bool)
    for hits in store.scroll_docs(flt=flt, with_sparse=False, payload_fields=["doc_id"], batch=5000):
        for h in hits:
            i = pos.get(h.doc_id)
            if i is not None:
                mask[i] = True
    return mask
