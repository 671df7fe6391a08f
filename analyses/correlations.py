"""Latent pairs that co-occur unexpectedly (NPMI), with trivially related pairs filtered out.

Binarise the docs x latents matrix, count co-occurrences with the sparse product X^T X (only
pairs that co-occur at all are materialised; computed in row chunks so peak memory follows the
non-zeros), and score each pair by normalised PMI:

    npmi(i, j) = log(p_ij / (p_i p_j)) / -log(p_ij)        in [-1, 1]

Pairs whose *labels* are similar (cosine of label embeddings above ``max_label_sim``) are
dropped: "wife" co-occurring with "husband" is not news; "French" co-occurring with "2004" in a
training set is an artefact worth seeing. Latents present in more than ``max_freq`` of the
documents are skipped (they co-occur with everything and dominate the cost).

Cost is sum over documents of (latents per document)^2. Max-pooling 128 tokens x k=32 gives a
few hundred latents per document, which made X^T X take ~4 minutes at 100k documents. By default
each document therefore keeps its ``per_doc`` (64) most *salient* latents - activation relative to
the latent's mean activation - which cuts the work ~20x and keeps what defines the document
(``per_doc=0`` keeps all).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from analyses.matrix import DEFAULT_FLOOR, AnalysisError, load_matrix, require_docs
from indexer.store import Filter, Store


def cooccurrence(B: sp.csr_matrix, chunk: int = 20000) -> sp.csr_matrix:
    """Upper triangle of B^T B (float32 counts), accumulated over row chunks."""
    d = B.shape[1]
    C = sp.csr_matrix((d, d), dtype=np.float32)
    for s in range(0, B.shape[0], chunk):
        Bc = B[s : s + chunk]
        C = C + sp.triu(Bc.T @ Bc, k=1).tocsr()
    return C


def salient_binary(X: sp.csr_matrix, per_doc: int, threshold: float = 0.0) -> sp.csr_matrix:
    """Binary matrix keeping, per row, the ``per_doc`` largest activations relative to each column's mean."""
    X = X.tocsr()
    Xb = X.multiply(X > threshold).tocsr()
    Xb.eliminate_zeros()
    if per_doc <= 0:
        B = Xb.copy()
        B.data[:] = 1.0
        return B
    counts = np.diff(Xb.tocsc().indptr)
    sums = np.asarray(Xb.sum(axis=0)).ravel()
    mean = np.divide(sums, counts, out=np.ones_like(sums), where=counts > 0)
    rel = Xb.data / mean[Xb.indices]
    keep = np.zeros(len(rel), dtype=bool)
    for r in range(Xb.shape[0]):
        a, b = Xb.indptr[r], Xb.indptr[r + 1]
        if b - a <= per_doc:
            keep[a:b] = True
        else:
            keep[a + np.argpartition(-rel[a:b], per_doc - 1)[:per_doc]] = True
    rows = np.repeat(np.arange(Xb.shape[0]), np.diff(Xb.indptr))
    return sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], Xb.indices[keep])), shape=Xb.shape)


def npmi_pairs(B: sp.csr_matrix, min_support: int, min_npmi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = B.shape[0]
    counts = np.asarray(B.sum(axis=0)).ravel()
    C = cooccurrence(B).tocoo()
    mask = C.data >= min_support
    i, j, cij = C.row[mask], C.col[mask], C.data[mask].astype(np.float64)
    pi, pj, pij = counts[i] / n, counts[j] / n, cij / n
    with np.errstate(divide="ignore", invalid="ignore"):
        npmi = np.where(pij < 1, np.log(pij / (pi * pj)) / -np.log(pij), 1.0)
    keep = npmi >= min_npmi
    cond = np.maximum(cij / counts[i], cij / counts[j])
    return i[keep], j[keep], npmi[keep], cij[keep], cond[keep]


def correlations(
    store: Store,
    index: str,
    where: Filter | None = None,
    min_npmi: float = 0.3,
    max_label_sim: float = 0.2,
    min_support: int = 5,
    top: int = 20,
    threshold: float = 0.0,
    max_freq: float = 0.5,
    n_examples: int = 3,
    per_doc: int = 64,
    floor: float = DEFAULT_FLOOR,
) -> dict:
    if top <= 0 or min_support < 1:
        raise AnalysisError("--top and --min-support must be positive")
    m = load_matrix(store, index, where, floor=floor)
    require_docs(m, "the filter", minimum=2)
    B = salient_binary(m.X, per_doc, threshold)
    freq = np.asarray(B.sum(axis=0)).ravel() / m.n_docs
    cols = np.flatnonzero((freq <= max_freq) & (freq * m.n_docs >= min_support))
    Bs = B[:, cols].tocsr()
    i, j, npmi, cij, cond = npmi_pairs(Bs, min_support, min_npmi)
    i, j = cols[i], cols[j]
    order = np.argsort(-npmi, kind="stable")
    lat_ids = sorted(set(i.tolist()) | set(j.tolist()))
    vecs = {p.latent: p for p in store.get_latents(lat_ids, with_vectors=True)} if lat_ids else {}
    pairs, dropped_similar = [], 0
    Bc = B.tocsc()
    for o in order:
        a, b = int(i[o]), int(j[o])
        va, vb = vecs.get(a), vecs.get(b)
        sim = _cos(va.label_vec, vb.label_vec) if va and vb and va.label_vec and vb.label_vec else 0.0
        if sim > max_label_sim:
            dropped_similar += 1
            continue
        rows = np.intersect1d(Bc[:, a].indices, Bc[:, b].indices)
        strength = np.asarray(m.X[rows][:, [a, b]].sum(axis=1)).ravel() if len(rows) else np.zeros(0)
        ex = [m.doc_ids[r] for r in rows[np.argsort(-strength, kind="stable")][:n_examples]]
        pairs.append({"a": a, "b": b, "label_a": va.payload.get("label", "") if va else "", "label_b": vb.payload.get("label", "") if vb else "",
                      "npmi": round(float(npmi[o]), 4), "count": int(cij[o]), "max_cond_prob": round(float(cond[o]), 4),
                      "label_sim": round(float(sim), 4), "examples": ex})
        if len(pairs) >= top:
            break
    return {"documents": m.n_docs, "per_doc": per_doc, "floor": floor, "latents_considered": int(len(cols)), "pairs_above_min_npmi": int(len(npmi)),
            "dropped_similar_labels": dropped_similar, "pairs": pairs}


def _cos(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-8))
