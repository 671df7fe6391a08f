"""Scan an index slice into a scipy CSR matrix (docs x latents), chunk by chunk.

Never materialises a dense docs x latents matrix: memory grows with the number of non-zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from indexer.catalog import require_index
from indexer.store import Filter, Store


class AnalysisError(ValueError):
    """Bad analysis input (empty slice, k too large, unknown field); one-line error."""


@dataclass
class DocMatrix:
    doc_ids: list[str]
    X: sp.csr_matrix  # float32 max activations
    payload: list[dict]  # requested payload fields per doc

    @property
    def n_docs(self) -> int:
        return self.X.shape[0]

    def binary(self, threshold: float = 0.0) -> sp.csr_matrix:
        B = (self.X > threshold).astype(np.float32)
        B.eliminate_zeros()
        return B.tocsr()


def load_matrix(store: Store, index: str, flt: Filter | None = None, fields: list[str] | None = None,
                with_dense: bool = False) -> DocMatrix:
    manifest = require_index(store, index)
    d_sae = int(manifest["sae"]["d_sae"])
    ids: list[str] = []
    payloads: list[dict] = []
    indptr = [0]
    idx_chunks, val_chunks = [], []
    dense: list[list[float]] = []
    nnz = 0
    for hits in store.scroll_docs(flt=flt, with_sparse=True, with_dense=with_dense,
                                  payload_fields=["doc_id"] + list(fields or []), batch=2000):
        for h in hits:
            ids.append(h.doc_id)
            sp_ = h.sparse or {}
            k = np.fromiter(sp_.keys(), dtype=np.int32, count=len(sp_))
            v = np.fromiter(sp_.values(), dtype=np.float32, count=len(sp_))
            idx_chunks.append(k)
            val_chunks.append(v)
            nnz += len(k)
            indptr.append(nnz)
            if with_dense:
                dense.append(h.payload.pop("_dense"))
            payloads.append(h.payload)
    X = sp.csr_matrix(
        (np.concatenate(val_chunks) if val_chunks else np.zeros(0, np.float32),
         np.concatenate(idx_chunks) if idx_chunks else np.zeros(0, np.int32), np.asarray(indptr, dtype=np.int64)),
        shape=(len(ids), d_sae),
    )
    X.sort_indices()
    m = DocMatrix(ids, X, payloads)
    if with_dense:
        m.dense = np.asarray(dense, dtype=np.float32)  # type: ignore[attr-defined]
    return m


def require_docs(m: DocMatrix, what: str, minimum: int = 1) -> None:
    if m.n_docs < minimum:
        raise AnalysisError(f"{what} matches {m.n_docs} document(s); need at least {minimum}")


def latent_labels(store: Store, ids: list[int]) -> dict[int, str]:
    return {p.latent: p.payload.get("label", "") for p in store.get_latents(sorted(set(int(i) for i in ids)))} if ids else {}
