"""Query -> latents: which of an index's latents a text asks for, and the weights tuned for it.

Used by search (the query's latents), ``saedex latents --query`` and the API's latent listing.
"""

from __future__ import annotations

import re
import threading
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field, field_validator

from indexer.core.params import Params
from indexer.encode.embedder import get_embedder
from indexer.encode.recipe import read_manifest
from indexer.labels.dictionary import dictionary_for
from indexer.labels.dictionary.vocabulary import antonyms, taxonomy_vectors
from indexer.store import Store
from indexer.store.catalog import latent_summary, require_index
from indexer.store.columns import fresh_copy, view_doc_counts
from indexer.store.latent_table import LatentTable, latent_table


MAX_LATENTS_PAGE = 200  # 20,000 at once was 12.5 MB and 2.4 s a request, open to search keys; 500 still 4.7x p99


class LatentsParams(Params):
    query: Optional[str] = Field(None, max_length=500, description="Rank latents by similarity of their label/contexts to this text.")
    top: int = Field(20, ge=1, le=MAX_LATENTS_PAGE, description=f"Latents to list (a page: at most {MAX_LATENTS_PAGE}; "
                                                                 "--offset for the next).")
    offset: int = Field(0, ge=0, le=1_000_000, description="Skip this many latents first (paging through the dictionary).")
    family: Literal["all", "token", "concept"] = Field("all", description="Latents of this SAE family only: token | concept | all.")
    view: Optional[Literal["response", "prompt"]] = Field(None, description=(
        "Latents that fire in this view, ranked by their share of its texts: response | prompt (records indexed with "
        "--prompt-field); default: every text."))

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v


def list_latents(store: Store, index: str, params: LatentsParams, table=None) -> dict:
    """``saedex latents`` and ``GET /v1/indexes/NAME/latents``: the top latents by document
    frequency, or by similarity to ``params.query`` (``table``: the caller's latent table)."""
    manifest = require_index(store, index)
    start, end = params.offset, params.offset + params.top
    if params.view is not None:
        return _list_in_view(store, index, params, manifest, table)
    if params.query is None:
        # from the in-memory table: reading every latent's payload (examples and all) for a page
        # cost ~18k payload conversions a request, and a few such requests stalled the server
        table = table if table is not None else latent_table(store)
        fam = table.in_family(params.family)
        present = table.doc_freq > 0 if fam is None else (table.doc_freq > 0) & fam
        rows_idx = np.flatnonzero(present)
        order = rows_idx[np.argsort(-table.doc_freq[rows_idx], kind="stable")]
        page = [int(table.ids[r]) for r in order[start:end]]
        pts = {p.latent: p for p in store.get_latents(page)}
        rows = [latent_summary(pts[i]) for i in page if i in pts]
        more = len(order) > end
    else:
        ranked = latents_for_query(store, params.query, end + 1, table=table, family=params.family)
        more = len(ranked) > end
        ranked = ranked[start:end]
        pts = {p.latent: p for p in store.get_latents([i for i, _ in ranked])}
        rows = [latent_summary(pts[i]) | {"similarity": round(s, 4)} for i, s in ranked if i in pts]
    return {"latents": rows, "offset": start, "next_offset": end if more else None}


def _list_in_view(store: Store, index: str, params: LatentsParams, manifest, table) -> dict:
    """Latents by their share of one view's texts (``view_doc_freq``), or by similarity to the
    query among those that fire in the view."""
    manifest.state.require_view(params.view, index)
    n, counts = view_doc_counts(fresh_copy(store, manifest.recipe, progress=False, view=params.view))
    start, end = params.offset, params.offset + params.top
    table = table if table is not None else latent_table(store)
    fam = table.in_family(params.family)
    if params.query is None:
        ids = np.flatnonzero(counts > 0)
        if fam is not None:
            rows = table.rows(ids)
            ids = ids[(rows >= 0) & fam[np.maximum(rows, 0)]]
        ranked = [(int(i), None) for i in ids[np.argsort(-counts[ids], kind="stable")]]
    else:
        ranked = [(i, s) for i, s in latents_for_query(store, params.query, len(counts), table=table, family=params.family)
                  if counts[i] > 0]
    more = len(ranked) > end
    ranked = ranked[start:end]
    pts = {p.latent: p for p in store.get_latents([i for i, _ in ranked])}
    rows_out = []
    for i, sim in ranked:
        if i in pts:
            row = latent_summary(pts[i]) | {"view": params.view, "view_doc_count": int(counts[i]),
                                            "view_doc_freq": round(float(counts[i] / max(n, 1)), 5)}
            rows_out.append(row if sim is None else row | {"similarity": round(sim, 4)})
    return {"latents": rows_out, "offset": start, "next_offset": end if more else None, "view": params.view, "texts": n}


_ref_cache: dict[int, np.ndarray | None] = {}
_centering_lock = threading.Lock()


def _reference_concepts(dim: int) -> np.ndarray | None:
    """Unit embeddings of the taxonomy's concepts (styles, tones, formats, topics...): the
    reference set a latent's generic similarity is measured against. None when the embedder's
    dimension differs from the index's label vectors (another embedder)."""
    if dim not in _ref_cache:
        emb = get_embedder()
        _ref_cache[dim] = taxonomy_vectors(emb) if emb.dim == dim else None
    return _ref_cache[dim]


def centering(table: LatentTable) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Each latent's mean similarity to the taxonomy's concepts, by label and by snippets: how
    close it is to *any* property (query matching subtracts it). Computed once per table; a
    table built with its own references (tests) keeps them."""
    if table.label_ref is not None:
        return table.label_ref, table.snippet_ref
    with _centering_lock:
        got = table.derived.get("centering")
        if got is None:
            ref = _reference_concepts(table.label_vecs.shape[1]) if table.size else None
            got = ((table.label_vecs @ ref.T).mean(axis=1), (table.snippet_vecs @ ref.T).mean(axis=1)) if ref is not None else (None, None)
            table.derived["centering"] = got
    return got


DIRECTION_WEIGHT = 0.0  # measured on the dev queries: directions lowered SAE MAP (0.336 at 0, 0.304 at 0.5; README)
QUALITY_WEIGHT = 0.5  # 0.3358 vs 0.3327 without quality weighting (dev queries)
# A latent's similarity to the query minus CENTER x its mean similarity to the taxonomy's 208
# concepts: latents whose contexts resemble every property stop crowding out specific ones.
# Dev MAP (17 queries): 0.3349 at 0, 0.3375 at 0.5, 0.3426 at 1, 0.3461 at 1.5, 0.3434 at 2 (README).
CENTER = 1.5
# Both families in one query (search/engine.SearchOptions.concept_share): None ranks the families'
# latents together; a share ranks each on its own, its n_latents best, and gives the concept family
# that share of the query's rank weights. 0.8: the dev tuning half's pick among None, 0.3, 0.5,
# 0.6, 0.7, 0.8, 0.9, 1 (SAE MAP x dense 1.439 -> 1.505); validation half 1.207 -> 1.218 and 26
# held-out queries 1.170 -> 1.216, 15 Brown genre queries 1.327 -> 1.372 (benchmarks/tune_families.py;
# README "Ranking each family on its own").
# Ranked together, the token family's many near-duplicate latents of a query's words ("said",
# quotes, "joke") crowd out the one concept latent that names it ("mistakes": AP 0.02 -> 0.09).
# Concept latents' directions are their decoder rows in the embedder's space (the query's own
# space), hence a weight of their own.
CONCEPT_SHARE: float | None = 0.8
CONCEPT_DIRECTION_WEIGHT = 0.0
# A concept latent labelled "unclear" (no name separates its sentences from the background), or by a
# word's first piece (kind "form": its sentences share "[Cr]agg", "[Cr]uyff"), matches a query through
# the near-miss name its label vector keeps; it counts this much of a named latent's score. Dev
# queries, halves (README "Unclear latents in queries"): SAE MAP x dense, tuning half 1.191 at 1 ->
# 1.255 at 0.75 and at 0.5; validation half 1.111 -> 1.116 / 1.113.
UNCLEAR_WEIGHT = 0.5


def top_order(score: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(-score, kind="stable")[:k]`` without sorting all of ``score``: the positions of
    the k highest scores, ties in position order (a search takes the top 40 of ~2,000 this way)."""
    s = -np.asarray(score)
    if len(s) > k > 0:
        kth = np.partition(s, k - 1)[k - 1]
        idx = np.flatnonzero(s <= kth)  # every score tied with the k-th stays, in position order
        return idx[np.argsort(s[idx], kind="stable")][:k]
    return np.argsort(s, kind="stable")[: max(k, 0)]


def rank_weights(n: int, temperature: float) -> np.ndarray:
    """w_r = exp(-(r/n)/T) for ranks r = 0..n-1 (the paper's rank weighting of a query's latents)."""
    r = np.arange(n, dtype=np.float64)
    return np.exp(-(r / max(n, 1)) / temperature)


# The query's cosines to every latent are one product over ~15k x 2 rows of 384 floats: memory-bound
# (46 MB read a search, 4.2 ms on one core of the demo machine). It runs in half precision (half
# the bytes: 1.6 ms), then every row that could reach a signal's pool is recomputed in float32
# (:func:`_refine`), so the latents, scores and order are those of the float32 product. HALF_ERROR
# bounds the half-precision error of a cosine of unit rows: rounding both inputs and the output to
# float16 (unit roundoff 2^-11) with float32 accumulation errs by at most ~1.5e-3; measured at most
# 3.3e-4 over 100 queries on the demo index. (The rows refined cost ~0.4 ms a signal; a tighter
# bound would save part of that, a looser kernel would need a looser bound.)
HALF_ERROR = 4e-3


def _similarity_rows(table: LatentTable, d, part: int, rows=slice(None)) -> np.ndarray:
    """The float32 rows a query is compared with, of one part: 0 label vectors, 1 snippet
    vectors, 2 the dictionary's directions; ``rows`` of the table (default all)."""
    if part == 0:
        return table.label_vecs[rows]
    if part == 1:
        return table.snippet_vecs[rows]
    return d.directions[np.minimum(table.ids[rows], d.directions.shape[0] - 1)]


def _similarities(table: LatentTable, d, q: np.ndarray) -> np.ndarray:
    """Approximate cosines of the query to every latent's label, snippets and (with a dictionary)
    direction: rows (name, evidence[, direction]), one half-precision product over one stacked
    matrix made once per table and dictionary; exact where it matters after :func:`_refine`.
    (The product alone in bf16 was measured and not adopted: 1.3 ms less, but its top-10
    documents were 0.989 the float32 ones; refinement keeps float32's order.)"""
    key = ("half_similarity_stack", id(d))
    got = table.derived.get(key)
    if got is None:
        parts = [_similarity_rows(table, d, j) for j in range(2 if d is None else 3)]
        stack = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)).to(torch.float16)
        norms = [float(np.linalg.norm(p, axis=1).max(initial=0.0)) for p in parts]
        got = table.derived[key] = (stack, norms)
    stack, _ = got
    with torch.inference_mode():
        approx = torch.mv(stack, torch.from_numpy(np.asarray(q, np.float32)).to(torch.float16)).float().numpy()
    return approx.reshape(-1, table.size)


def _refine(table: LatentTable, d, sims: np.ndarray, q: np.ndarray, offsets: list, members, pool: int) -> None:
    """Recompute in float32, in place, each signal's rows that might be among its ``pool`` best
    (signal = sims row minus its offset; ``sims`` holds the columns of table rows ``members``, or
    of every row where None): rows whose approximate signal is within twice the error bound of
    the pool's edge. Any row left approximate is then exactly below every row of the exact pool,
    so nomination, floors and scores match float32's."""
    _, norms = table.derived[("half_similarity_stack", id(d))]
    q = np.asarray(q, np.float32)
    for j in range(sims.shape[0]):
        sig = sims[j] - offsets[j]
        edge = np.partition(sig, len(sig) - pool)[len(sig) - pool]
        pos = np.flatnonzero(sig >= edge - 2 * HALF_ERROR * max(norms[j], 1e-12))
        rows = pos if members is None else members[pos]
        sims[j, pos] = _similarity_rows(table, d, j, rows).astype(np.float32, copy=False) @ q


def latents_for_query(store: Store, query: str | np.ndarray, top: int, label_weight: float = 0.5,
                      direction_weight: float = DIRECTION_WEIGHT, quality_weight: float = QUALITY_WEIGHT,
                      table=None, center: float = CENTER, family: str = "all") -> list[tuple[int, float]]:
    """Latents ranked by what they are called, what they fire on here, and what they do.

    - name: cos(query, label vector) (the dictionary's concept text where the SAE ships one);
    - evidence: cos(query, mean of this index's firing snippets);
    - direction: cos(query, the latent's contrastive direction from the SAE's dictionary - its
      activating contexts minus non-activating ones, so what every text shares cancels out).

    score = (1 - dw) * (lw * name + (1 - lw) * evidence) + dw * direction, times
    (1 - qw) + qw * quality, so a latent whose label detects it poorly counts less. Name and
    evidence are centred: minus ``center`` x the latent's mean similarity to the taxonomy's
    concepts, so a latent whose contexts resemble any property does not outrank one that
    resembles this one. Each signal
    nominates its ``pool`` best latents; a nominee's missing signal counts as that signal's
    pool floor. All of it is matrix products over the index's in-memory latent table
    (:mod:`indexer.store.latent_table`; pass ``table`` when the caller holds it). ``query`` may be
    given already embedded. ``family`` (token | concept | all) limits the latents considered.
    """
    return latents_by_family(store, query, top, {family: direction_weight}, label_weight, quality_weight, table, center)[family]


def latents_by_family(store: Store, query: str | np.ndarray, top: int, families: dict[str, float], label_weight: float = 0.5,
                      quality_weight: float = QUALITY_WEIGHT, table=None, center: float = CENTER) -> dict[str, list[tuple[int, float]]]:
    """:func:`latents_for_query` for several families at once (family -> its direction weight):
    one query embedding and one similarity product serve them all, so ranking each family on its
    own (search's concept share) costs what one ranking does. Each family's list is exactly what
    :func:`latents_for_query` returns for it alone (the refinement keeps every pool float32's)."""
    table = table if table is not None else latent_table(store)
    label_ref, snippet_ref = centering(table)
    q = get_embedder().encode_query(query) if isinstance(query, str) else np.asarray(query, np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    d = None
    if any(dw > 0 for dw in families.values()):
        manifest = read_manifest(store)
        d = dictionary_for(manifest.recipe) if manifest is not None else None
    centred = bool(center) and label_ref is not None
    offsets = [center * label_ref, center * snippet_ref] if centred else [0.0, 0.0]
    opposite = opposite_rows(table, query) if isinstance(query, str) else None
    sims = None
    out: dict[str, list[tuple[int, float]]] = {}
    for family, direction_weight in families.items():
        allowed = table.in_family(family)
        members = None if allowed is None else np.flatnonzero(allowed)
        n_allowed = table.size if members is None else len(members)
        if n_allowed == 0:
            out[family] = []
            continue
        if sims is None:
            sims = _similarities(table, d, q)
        out[family] = _rank_family(table, d, sims, q, offsets, members, min(max(top * 4, 200), n_allowed), top,
                                   label_weight, direction_weight, quality_weight, opposite)
    return out


def _rank_family(table: LatentTable, d, sims: np.ndarray, q: np.ndarray, offsets: list, members, pool: int, top: int,
                 label_weight: float, direction_weight: float, quality_weight: float, opposite) -> list[tuple[int, float]]:
    """One family's ranking from the query's similarities to every row: the family's columns
    (table rows ``members``; None = all) are taken out and refined for its pools, so a family's
    ranking costs its own rows' work, not the table's."""
    if members is not None:
        sims = sims[:, members]
        offsets = [o[members] if isinstance(o, np.ndarray) else o for o in offsets]
    _refine(table, d, sims, q, offsets + [0.0] * (sims.shape[0] - 2), members, pool)
    name, evidence = sims[0] - offsets[0], sims[1] - offsets[1]
    signals = [(label_weight * (1 - direction_weight), name), ((1 - label_weight) * (1 - direction_weight), evidence)]
    if direction_weight > 0:
        if d is not None:
            signals.append((direction_weight, sims[2]))
        else:
            signals = [(w / (1 - direction_weight), sig) for w, sig in signals]
    n = sims.shape[1]
    nominated = np.zeros(n, bool)
    tops = []
    for _, sig in signals:
        best = np.argpartition(-sig, pool - 1)[:pool]
        nominated[best] = True
        tops.append(best)
    pos = np.flatnonzero(nominated)
    score = np.zeros(len(pos), np.float64)
    for (w, sig), best in zip(signals, tops):
        floor = float(sig[best].min())
        in_pool = np.zeros(n, bool)
        in_pool[best] = True
        score += w * np.where(in_pool[pos], sig[pos], floor)
    rows = pos if members is None else members[pos]
    qual = table.quality[rows]
    score *= (1 - quality_weight) + quality_weight * np.where(np.isnan(qual), 0.5, qual)
    if UNCLEAR_WEIGHT != 1.0:  # lowered, whatever the sign of the score
        unclear = _unclear_rows(table)[rows]
        score[unclear] -= (1 - UNCLEAR_WEIGHT) * np.abs(score[unclear])
    if opposite is not None:
        score[opposite[rows]] = -np.inf
    order = np.lexsort((table.ids[rows], -score))[:top]
    order = order[np.isfinite(score[order])]
    return list(zip(table.ids[rows[order]].tolist(), score[order].tolist()))


def _unclear_rows(table: LatentTable) -> np.ndarray:
    """(table.size,) bool: concept latents whose label names no meaning: "unclear", or a word's
    first piece (kind "form"; both keep the near-miss name's vector)."""
    got = table.derived.get("unclear")
    if got is None:
        got = table.derived["unclear"] = np.array([k in ("unclear", "form") for k in table.kinds], bool)
    return got


_WORD = re.compile(r"[a-z]+")


def opposite_rows(table: LatentTable, query: str) -> np.ndarray:
    """(table.size,) bool: latents whose label names the opposite of a query word (WordNet
    antonyms: "positive" for "negative review") and not the word itself. Query embeddings sit
    next to their opposites, so without this a query for negative reviews asked for latents of
    "positive" (measured: README, "Opposites in queries")."""
    words = set(_WORD.findall(query.lower()))
    opposite = {a for w in words for a in antonyms(w)} - words
    mask = np.zeros(table.size, bool)
    if not opposite:
        return mask
    key = "label_words"
    rows_by_word = table.derived.get(key)
    if rows_by_word is None:
        rows_by_word = {}
        for i, label in enumerate(table.labels):
            for w in set(_WORD.findall((label or "").lower())):
                rows_by_word.setdefault(w, []).append(i)
        table.derived[key] = rows_by_word
    for w in opposite:
        mask[rows_by_word.get(w, [])] = True
    return mask


def cosine_matrix(vectors: list[list[float]]) -> np.ndarray:
    m = np.asarray(vectors, dtype=np.float32)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    m = m / np.maximum(n, 1e-8)
    return m @ m.T
