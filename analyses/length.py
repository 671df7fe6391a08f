"""Length-aware comparison of two slices: document length is the confound of every latent count.

A document's vector is a max over its tokens, so a longer text simply has more latents: 4x longer
responses show up as hundreds of latents "more frequent" in them, whatever they say. The
correction compares like with like: documents are cut into strata of similar length (fixed
sqrt(2)-wide buckets of tokens read, grouped into about equal shares of both slices' documents),
each latent's frequency is compared within each stratum, and the strata are combined:

- the effect: the Mantel-Haenszel risk difference, sum_s w_s (p_As - p_Bs) / sum_s w_s with
  w_s = n_As n_Bs / (n_As + n_Bs) - the difference A and B would show at equal lengths;
- the test: Cochran-Mantel-Haenszel (a stratified two-proportion test; its z over strata).

Strata where one slice has no document carry no weight: a length range only one slice reaches
cannot say anything about the other. Why strata and not a per-latent logistic model with
log-length as covariate: one pass of counts per stratum serves every latent at once (20,000
logistic fits per diff would not), and the README measures the choice on a planted confound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from indexer.store import Filter
from indexer.store.columns import (
    LENGTH_FIELD,
    ColumnCopy,
    bucket_strata,
    column_lengths,
    column_values,
    length_bucket,
    row_mask,
)

STRATA = 8  # length strata (equal-frequency over both slices); measured in the README


@dataclass
class SliceLengths:
    """Tokens read per document of one slice (copy order); None when some document has none stored."""

    tokens: np.ndarray | None

    @property
    def median(self) -> float | None:
        return float(np.median(self.tokens)) if self.tokens is not None and len(self.tokens) else None


def slice_lengths(copy: ColumnCopy, flt: Filter | None) -> SliceLengths:
    parts = []
    for shard in copy.iter_shards(arrays=False):
        rows = np.flatnonzero(row_mask(shard.table, flt))
        if not len(rows):
            continue
        got = column_lengths(shard.table)[rows]
        if np.isnan(got).any():
            return SliceLengths(None)
        parts.append(got)
    return SliceLengths(np.concatenate(parts) if parts else np.zeros(0))


def cmh(ca: np.ndarray, na: np.ndarray, cb: np.ndarray, nb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified comparison of latent frequencies. ``ca``/``cb``: (S, L) counts; ``na``/``nb``:
    documents per stratum, (S,) or (S, L). Returns the CMH z (positive: more in A), its two-sided
    p-value and the Mantel-Haenszel risk difference (NaN where no stratum holds both slices)."""
    na = np.broadcast_to(np.asarray(na, np.float64).reshape(len(ca), -1), ca.shape)
    nb = np.broadcast_to(np.asarray(nb, np.float64).reshape(len(cb), -1), cb.shape)
    tot = na + nb
    both = (na > 0) & (nb > 0)
    m1 = ca + cb
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(both, na * m1 / tot, 0.0)
        var = np.where(both & (tot > 1), na * nb * m1 * (tot - m1) / (tot**2 * (tot - 1)), 0.0)
        w = np.where(both, na * nb / tot, 0.0)
        diff_s = np.where(both, ca / np.where(na > 0, na, 1) - cb / np.where(nb > 0, nb, 1), 0.0)
        num = np.where(both, ca - expected, 0.0).sum(axis=0)
        sd = np.sqrt(var.sum(axis=0))
        z = np.where(sd > 0, num / sd, 0.0)
        rd = (w * diff_s).sum(axis=0) / w.sum(axis=0)
    p = 2 * stats.norm.sf(np.abs(z))
    return z, p, rd


def length_report(a: SliceLengths, bs: list[SliceLengths]) -> dict:
    """The slices' lengths, said at the top of a diff: medians in tokens and B's over A's."""
    ma = a.median
    mbs = [b.median for b in bs]
    out: dict = {"median_tokens_a": ma, "median_tokens_b": mbs[0] if len(mbs) == 1 else mbs}
    if ma and all(mbs):
        out["b_over_a"] = round(float(np.median(np.concatenate([b.tokens for b in bs]))) / ma, 2)  # type: ignore[misc]
    return out


def doc_strata(payloads: list[dict], n_strata: int = STRATA) -> np.ndarray | None:
    """Each document's length stratum (from its payload's n_tokens); None if some has no length."""
    toks = [p.get(LENGTH_FIELD) for p in payloads]
    if not toks or any(not isinstance(t, (int, float)) for t in toks):
        return None
    arr = np.asarray(toks, np.float64)
    return bucket_strata([arr], n_strata)[length_bucket(arr)]


def length_matched_npmi(rows_a: np.ndarray, rows_b: np.ndarray, strata: np.ndarray) -> float:
    """NPMI of two latents with co-occurrence expected *within* length strata: a pair that meets
    more than chance only because both fire more in long documents drops towards 0.
    ``rows_a``/``rows_b``: the documents (row numbers) that have each latent."""
    n = len(strata)
    both = len(np.intersect1d(rows_a, rows_b, assume_unique=True))
    if both == 0 or both == n:
        return 0.0
    k = int(strata.max()) + 1
    ns = np.bincount(strata, minlength=k).astype(np.float64)
    ca = np.bincount(strata[rows_a], minlength=k)
    cb = np.bincount(strata[rows_b], minlength=k)
    expected = float(np.sum(np.where(ns > 0, ca * cb / np.maximum(ns, 1), 0.0)))
    return float(np.log(both / max(expected, 1e-12)) / -np.log(both / n))


LENGTH_SPREAD_WARN = 2.0  # clusters whose median lengths differ by more than this factor get a warning


def cluster_lengths(copy: ColumnCopy, out: dict) -> None:
    """Each cluster's median length (tokens read), and a warning when clusters differ mostly in
    length: max-pooled vectors of long texts share many latents, so "the long documents" can come
    out as a cluster of their own whatever the axis."""
    lengths: dict[str, float] = {}
    for shard in copy.iter_shards(arrays=False):
        ids, toks = column_values(shard.table, "doc_id"), column_lengths(shard.table)
        lengths.update((d, float(t)) for d, t in zip(ids, toks.tolist()) if t == t)
    per: dict[int, list[float]] = {}
    for d, c in out.get("assignments", {}).items():
        if d in lengths:
            per.setdefault(int(c), []).append(lengths[d])
    for cl in out["clusters"]:
        got = per.get(cl["id"])
        cl["median_tokens"] = float(np.median(got)) if got else None
    meds = [(cl["median_tokens"], cl["id"]) for cl in out["clusters"] if cl.get("median_tokens")]
    if len(meds) >= 2:
        (lo, c_lo), (hi, c_hi) = min(meds), max(meds)
        if hi / lo > LENGTH_SPREAD_WARN:
            out["warnings"] = out.get("warnings", []) + [
                f"clusters differ in length: cluster {c_hi} has a median of {hi:.0f} tokens, cluster {c_lo} {lo:.0f}; "
                "longer texts share more latents, so a cluster may stand for length rather than for the axis"]
