"""Dataset diffing: which latents are more frequent in slice A than in slice B?

Per latent: document frequency in each slice (a document "has" a latent when its max activation
exceeds ``threshold``), difference and ratio, a two-proportion z-test and Benjamini-Hochberg
adjusted p-values. Coverage filters drop latents present in almost every or almost no document
(they cannot describe a difference a person cares about). Multi-way: one target against the
maximum of several others (the paper's model-comparison setting).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from analyses.matrix import DEFAULT_FLOOR, AnalysisError, DocMatrix, latent_cards, latent_medians, load_matrix, require_docs
from indexer.pooling import fire_spans
from indexer.store import Filter, Store


def two_proportion_test(ca: np.ndarray, na: int, cb: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """z statistic and two-sided p-value per latent for H0: p_a == p_b."""
    pa, pb = ca / na, cb / nb
    pool = (ca + cb) / (na + nb)
    se = np.sqrt(pool * (1 - pool) * (1 / na + 1 / nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (pa - pb) / se, 0.0)
    p = 2 * stats.norm.sf(np.abs(z))
    return z, p


def bh_adjust(p: np.ndarray) -> np.ndarray:
    if len(p) == 0:
        return p
    return stats.false_discovery_control(np.clip(p, 0, 1), method="bh")


def doc_counts(m: DocMatrix, threshold: float) -> np.ndarray:
    return np.asarray((m.X > threshold).sum(axis=0)).ravel().astype(np.float64)


def top_docs_for_latent(m: DocMatrix, latent: int, n: int) -> list[int]:
    col = m.X[:, latent].toarray().ravel()
    nz = np.flatnonzero(col > 0)
    return nz[np.argsort(-col[nz], kind="stable")][:n].tolist()


def diff(
    store: Store,
    index: str,
    a: Filter,
    b: Filter | list[Filter],
    top: int = 20,
    threshold: float = 0.0,
    min_coverage: float = 0.005,
    max_coverage: float = 0.95,
    n_examples: int = 5,
    hypotheses: int = 0,
    floor: float = DEFAULT_FLOOR,
    llm_model: str | None = None,
) -> dict:
    others = b if isinstance(b, list) else [b]
    if not others:
        raise AnalysisError("diff needs at least one B filter")
    if top <= 0:
        raise AnalysisError("--top must be positive")
    medians = latent_medians(store, index) if floor > 0 else None  # read once for every slice
    A = load_matrix(store, index, a, floor=floor, medians=medians)
    require_docs(A, f"filter A ({_desc(a)})")
    Bs = [load_matrix(store, index, f, floor=floor, medians=medians) for f in others]
    for f, Bm in zip(others, Bs):
        require_docs(Bm, f"filter B ({_desc(f)})")
    ca = doc_counts(A, threshold)
    fa = ca / A.n_docs
    fbs = np.stack([doc_counts(Bm, threshold) / Bm.n_docs for Bm in Bs])
    which = fbs.argmax(axis=0) if len(Bs) > 1 else np.zeros(len(fa), dtype=int)
    fb = fbs[which, np.arange(len(fa))] if len(Bs) > 1 else fbs[0]
    nb = np.array([Bs[w].n_docs for w in which])
    cb = fb * nb
    # Two-proportion test against the B slice that sets fb (the max of the others).
    z, p = two_proportion_test(ca, A.n_docs, cb, nb)
    pooled = (ca + cb) / (A.n_docs + nb)
    keep = (pooled >= min_coverage) & (pooled <= max_coverage) & ((ca + cb) > 0)
    cand = np.flatnonzero(keep)
    p_adj = np.ones_like(p)
    p_adj[cand] = bh_adjust(p[cand])
    d = fa - fb
    order = cand[np.argsort(-np.abs(d[cand]), kind="stable")][:top]
    cards = latent_cards(store, order.tolist())
    rows = []
    for lat in order.tolist():
        src = A if d[lat] > 0 else Bs[int(which[lat])]
        ex_rows = top_docs_for_latent(src, lat, n_examples)
        ex_ids = [src.doc_ids[r] for r in ex_rows]
        rows.append({
            "latent": lat, "label": cards.get(lat, {}).get("label", ""), "kind": cards.get(lat, {}).get("kind"),
            "quality": cards.get(lat, {}).get("quality"), "freq_a": round(float(fa[lat]), 5), "freq_b": round(float(fb[lat]), 5),
            "diff": round(float(d[lat]), 5), "ratio": round(float((fa[lat] + 1e-4) / (fb[lat] + 1e-4)), 3),
            "z": round(float(z[lat]), 3), "p_adj": float(p_adj[lat]), "more_in": "a" if d[lat] > 0 else "b",
            "examples": ex_ids,
        })
    _attach_spans(store, rows)
    out = {"n_a": A.n_docs, "n_b": [Bm.n_docs for Bm in Bs] if len(Bs) > 1 else Bs[0].n_docs, "threshold": threshold,
           "floor": floor,
           "tested_latents": int(len(cand)), "significant": int((p_adj[cand] < 0.05).sum()), "latents": rows}
    if hypotheses:
        from analyses.hypotheses import hypothesize_and_verify

        out["hypotheses"] = hypothesize_and_verify(store, rows, A, Bs[0], hypotheses, llm_model)
    return out


def _attach_spans(store: Store, rows: list[dict]) -> None:
    """Firing spans of each example (so a person sees *where* the latent fires)."""
    ids = sorted({d for r in rows for d in r["examples"]})
    docs = {h.doc_id: h.payload for h in store.get_docs(ids)} if ids else {}
    for r in rows:
        r["example_spans"] = {d: fire_spans(docs.get(d, {}), [r["latent"]]).get(r["latent"]) for d in r["examples"]}


def _desc(f: Filter) -> str:
    return ", ".join(f"{k}={v}" for k, v in f.equals.items()) or "all documents"
