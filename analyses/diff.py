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

from analyses.hypotheses import hypothesize_and_verify
from analyses.length import STRATA, bucket_strata, cmh, length_report, slice_lengths
from analyses.matrix import (
    ONE_STRATUM,
    AnalysisError,
    check_bound,
    check_fields,
    family_mask,
    latent_cards,
    latent_medians,
    load_matrix,
    require_view,
    resolve_latent_conditions,
    stratified_counts,
    view_filter,
)
from analyses.params import DiffParams
from analyses.readable import example_of, group_rows, summary
from indexer.encode.floor import above_floor
from indexer.encode.pooling import fire_spans
from indexer.store import Filter, Store, point_id
from indexer.store.catalog import require_index
from indexer.store.columns import fresh_copy
from indexer.store.schema import SPANS_OF


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


def top_docs_in_slice(store: Store, latent: int, flt: Filter, n: int, ref: np.ndarray | None, floor: float,
                      threshold: float, view: str = "response") -> list[str]:
    """The slice's documents where ``latent`` is strongest (and present by the counts' rule), from
    Qdrant's sparse index: one exact inverted-index query instead of a pass over the slice."""
    hits = store.search_sparse([int(latent)], [1.0], limit=min(4 * n, 100), flt=None if flt.is_empty() else flt, view=view)
    # Equal activations (common in bf16) are ordered by point id, not by Qdrant's insertion order:
    # an index re-created from an export shows the same examples.
    hits.sort(key=lambda h: (-h.score, point_id(h.doc_id)))
    present = above_floor(np.array([h.score for h in hits], np.float32), np.full(len(hits), int(latent)), ref, floor, threshold)
    return [h.doc_id for h, ok in zip(hits, present.tolist()) if ok][:n]


def diff(store: Store, index: str, params: DiffParams, n_examples: int = 5, llm_model: str | None = None) -> dict:
    """How slice ``params.a`` differs from ``params.b`` (or from the max of several B slices).

    With ``params.length == "stratified"`` (the default) each latent is compared within strata of
    documents of similar length (:mod:`analyses.length`): the ranking, ``p_adj`` and
    ``significant`` are the length-matched ones; the raw frequencies and their own test stay in
    each row, and ``length_driven`` marks latents whose raw difference does not survive.

    ``params.view`` compares the slices' prompts or responses; a slice may be defined by the other
    view's latents (``prompt-latent=ID``: :data:`analyses.matrix.LATENT_KEYS`)."""
    check_bound("--examples", n_examples, 0, 100)
    view = params.view
    require_view(store, index, view)
    a = params.to_filter(params.a, "a")
    others = [params.to_filter(x, "b") for x in params.b_slices()]
    top, threshold, floor, hypotheses = params.top, params.threshold, params.floor, params.hypotheses
    min_coverage, max_coverage = params.min_coverage, params.max_coverage
    recipe = require_index(store, index).recipe
    check_fields(store, index, a, "filter A")
    for f in others:
        check_fields(store, index, f, "filter B")
    ref = latent_medians(store, index) if floor > 0 else None
    labels = [f"A ({a.describe(' & ')})", "B (" + " | ".join(f.describe(" & ") for f in others) + ")"]
    asked = [a, *others]  # as the user wrote them (a latent condition becomes a list of ids below)
    a = view_filter(resolve_latent_conditions(store, index, a, "filter A", floor, ref), view)
    others = [view_filter(resolve_latent_conditions(store, index, f, "filter B", floor, ref), view) for f in others]
    copy = fresh_copy(store, recipe, view=view)
    len_a, len_bs = slice_lengths(copy, a), [slice_lengths(copy, f) for f in others]
    lengths = length_report(len_a, len_bs)
    stratify = params.length == "stratified" and len_a.tokens is not None and all(b.tokens is not None for b in len_bs)
    if params.length == "stratified" and not stratify:
        lengths["warning"] = "some documents have no stored length (n_tokens): compared without the length correction"
    stratum_of = bucket_strata([len_a.tokens, *(b.tokens for b in len_bs)], STRATA) if stratify else None

    def counts(f: Filter) -> tuple[np.ndarray, np.ndarray]:
        return stratified_counts(copy, f, stratum_of if stratify else ONE_STRATUM, floor, ref, threshold)

    na_s, ca_s = counts(a)
    na, ca = int(na_s.sum()), ca_s.sum(axis=0)
    if na < 1:
        raise AnalysisError(f"filter A ({asked[0].describe()}) matches 0 document(s); need at least 1")
    nbs_s, cbs_s = [], []
    for f, f_asked in zip(others, asked[1:]):
        n_s, c_s = counts(f)
        if n_s.sum() < 1:
            raise AnalysisError(f"filter B ({f_asked.describe()}) matches 0 document(s); need at least 1")
        nbs_s.append(n_s)
        cbs_s.append(c_s)
    nbs = [int(n_s.sum()) for n_s in nbs_s]
    cbs = [c_s.sum(axis=0) for c_s in cbs_s]
    fa = ca / na
    fbs = np.stack([c_ / n_ for c_, n_ in zip(cbs, nbs)])
    which = fbs.argmax(axis=0) if len(others) > 1 else np.zeros(len(fa), dtype=int)
    fb = fbs[which, np.arange(len(fa))] if len(others) > 1 else fbs[0]
    nb = np.array(nbs)[which]
    cb = fb * nb
    # Tests against the B slice that sets fb (the max of the others).
    z_raw, p_raw = two_proportion_test(ca, na, cb, nb)
    pooled = (ca + cb) / (na + nb)
    keep = (pooled >= min_coverage) & (pooled <= max_coverage) & ((ca + cb) > 0)
    keep &= family_mask(recipe, params.family, len(keep))
    d = fa - fb
    if stratify:
        lat = np.arange(len(fa))
        cb_sel = np.stack(cbs_s)[which, :, lat].T  # (S, L): each latent's counts in its own B slice
        nb_sel = np.stack(nbs_s)[which].T
        z, p, d_len = cmh(ca_s, na_s, cb_sel, nb_sel)
        lengths["strata"] = int(stratum_of.max()) + 1
        lengths["comparable_share"] = _comparable_share(na_s, nbs_s)
        untestable = keep & np.isnan(d_len)
        keep &= ~np.isnan(d_len)
    else:
        z, p, d_len, untestable = z_raw, p_raw, d, np.zeros(len(fa), bool)
    cand = np.flatnonzero(keep)
    p_adj = np.ones_like(p)
    p_adj[cand] = bh_adjust(p[cand])
    p_adj_raw = np.ones_like(p_raw)
    p_adj_raw[cand] = bh_adjust(p_raw[cand])
    driven = (p_adj_raw < 0.05) & (p_adj >= 0.05)
    order = cand[np.argsort(-np.abs(d_len[cand]), kind="stable")][:top]
    cards = latent_cards(store, order.tolist())
    rows = []
    for lat in order.tolist():
        more_a = d_len[lat] > 0
        src = a if more_a else others[int(which[lat])]
        row = {
            "latent": lat, "label": cards.get(lat, {}).get("label", ""), "family": cards.get(lat, {}).get("family"),
            "kind": cards.get(lat, {}).get("kind"),
            "quality": cards.get(lat, {}).get("quality"), "freq_a": round(float(fa[lat]), 5), "freq_b": round(float(fb[lat]), 5),
            "diff": round(float(d[lat]), 5), "ratio": round(float((fa[lat] + 1e-4) / (fb[lat] + 1e-4)), 3),
            "z": round(float(z[lat]), 3), "p_adj": float(p_adj[lat]), "more_in": "a" if more_a else "b",
            "examples": top_docs_in_slice(store, lat, src, n_examples, ref, floor, threshold, view),
        }
        if stratify:
            row |= {"diff_length_matched": round(float(d_len[lat]), 5), "p_adj_raw": float(p_adj_raw[lat]),
                    "length_driven": bool(driven[lat])}
        if len(others) > 1:
            row["b_slice"] = int(which[lat])
        rows.append(row)
    _attach_spans(store, rows, view)
    lengths["correction"] = "stratified" if stratify else "none"
    out = {"n_a": na, "n_b": nbs if len(others) > 1 else nbs[0], "threshold": threshold,
           "floor": floor, "length": lengths,
           "tested_latents": int(len(cand)), "significant": int((p_adj[cand] < 0.05).sum()), "latents": rows}
    if stratify:
        out["significant_raw"] = int((p_adj_raw[cand] < 0.05).sum())
        out["length_driven"] = int(driven[cand].sum())
        out["untestable_by_length"] = int(untestable.sum())
    grouped = group_rows(rows)
    out["groups"] = {"a": [g for g in grouped if g["more_in"] == "a"], "b": [g for g in grouped if g["more_in"] == "b"]}
    if view != "response":
        out["view"] = view
    out["summary"] = summary(out, *labels)
    if hypotheses:
        A = load_matrix(store, index, a, floor=floor, medians=ref, view=view)
        B0 = load_matrix(store, index, others[0], floor=floor, medians=ref, view=view)
        out["hypotheses"] = hypothesize_and_verify(store, rows, A, B0, hypotheses, llm_model)
    return out


def _comparable_share(na_s: np.ndarray, nbs_s: list[np.ndarray]) -> float:
    """Share of all documents in strata that hold A and every B slice (the rest cannot be compared)."""
    both = (na_s > 0) & np.all(np.stack(nbs_s) > 0, axis=0)
    total = na_s.sum() + sum(n.sum() for n in nbs_s)
    return round(float((na_s[both].sum() + sum(n[both].sum() for n in nbs_s)) / max(total, 1)), 4)


def _attach_spans(store: Store, rows: list[dict], view: str = "response") -> None:
    """Firing spans of each example (so a person sees *where* the latent fires), and the first
    example as a snippet of the view's text with its span marked and its payload fields."""
    ids = sorted({d for r in rows for d in r["examples"]})
    docs = {h.doc_id: h.payload for h in store.get_docs(ids)} if ids else {}
    for r in rows:
        r["example_spans"] = {d: fire_spans(docs.get(d, {}), [r["latent"]], SPANS_OF[view]).get(r["latent"]) for d in r["examples"]}
        first = r["examples"][0] if r["examples"] else None
        r["example"] = example_of(first, docs.get(first, {}), r["example_spans"][first], view=view) if first else None
