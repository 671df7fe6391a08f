"""Latent pairs that co-occur unexpectedly (NPMI), with trivially related pairs filtered out.

Binarise the docs x latents matrix, count co-occurrences with the sparse product X^T X (only
pairs that co-occur at all are materialised; computed in row chunks so peak memory follows the
non-zeros), and score each pair by normalised PMI:

    npmi(i, j) = log(p_ij / (p_i p_j)) / -log(p_ij)        in [-1, 1]

Two filters drop pairs that are related by construction rather than by the data:
- *Same span*: two latents that peak on the same token (within ``SAME_SPAN_TOKENS``) in most of
  the documents they share read one thing twice (SAEs split features: two "how" latents, "anti"
  and the "-" after it). Checked on the pair's strongest shared documents, from the stored peak
  positions. On whole BBC articles this removed 392 of the 409 pairs that outranked a planted
  sentence pair.
- *Similar labels*: pairs whose label *heads* are similar (cosine of MiniLM embeddings above
  ``max_label_sim``): "wife" co-occurring with "husband" is not news; "French" with "2004" in a
  training set is an artefact worth seeing. Only the head - what the latent fires on - is
  compared, not the context words an offline label carries in parentheses: those come from the
  very documents where the pair co-occurs, so a planted "ferry to Stockholm" + "grandma knitted
  socks" pair had labels ``"stockholm" (ferry, grandma)`` and ``"socks" (grandma, knitted)`` at
  cosine 0.27, while the heads sit at 0.13. Two *concept* latents' heads - short phrases from
  one vocabulary - sit closer at random (median cosine 0.226 demo / 0.233 dev index, against
  0.162 / 0.154 for two token latents' heads, and 0.167 / 0.144 for a token and a concept head):
  at 0.2, 61-65% of random concept pairs read as "similar" ("apology" and "rain": 0.24). So a pair
  of two concept latents is compared with ``max_label_sim`` + ``CONCEPT_PAIR_SIM_OFFSET``, the
  gap between those medians.
``min_quality`` (default 0: off) drops pairs with an unreliable label (quality below it): a
pair is news only if both names can be trusted. Each distinct text counts once (see :func:`distinct_rows`). Slices larger than ``max_docs``
(default 4,000) are sampled; the output's ``sampled_from`` says from how many documents. Latents present in more than ``max_freq`` of the documents are skipped (they co-occur with
everything and dominate the cost).

Cost is sum over documents of (latents per document)^2. A whole article keeps ~3,300 latents
above the noise floor, so each document keeps its ``per_doc`` (default 512) most *salient*
latents - activation relative to the latent's mean activation (``per_doc=0`` keeps all). At 64
(the old default, for 128-token documents) a planted sentence pair at the end of whole articles
was gone from every document.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

import numpy as np
import scipy.sparse as sp

from analyses.length import LENGTH_FIELD, doc_strata, length_matched_npmi
from analyses.readable import pair_example
from analyses.matrix import (
    AnalysisError,
    DocMatrix,
    check_fields,
    family_mask,
    latent_cards,
    load_matrix,
    require_docs,
    view_filter,
)
from analyses.params import CorrelationsParams
from indexer.core.errors import InputError
from indexer.core.progress import checkpoint
from indexer.encode.embedder import get_embedder
from indexer.encode.pooling import unpack
from indexer.store import Store
from indexer.store.catalog import require_index
from indexer.store.latent_table import LatentTable, latent_table
from indexer.store.schema import VIEW_KEYS

SAME_SPAN_TOKENS = 2  # peaks this close (in tokens) count as the same spot
SAME_SPAN_SHARE = 0.25  # a pair peaking at the same spot in this share of its shared documents is dropped
SAME_SPAN_SAMPLE = 12  # shared documents checked per pair (the strongest)
DEFAULT_PER_DOC = 512
MAX_EXAMINED = 3000  # candidate pairs examined by the filters, strongest NPMI first
CONCEPT_PAIR_SIM_OFFSET = 0.07  # concept-concept head similarity at random minus token-token (0.064 demo, 0.079 dev)
MAX_EXAMINED_CAP = 6000  # however large --top is (top=835 once meant 41,750 pairs and a 10 s timeout)
# Co-occurrence costs sum over documents of (kept latents)^2, ~131k pairs per whole document at
# per_doc=512: ~6 s per 1,000 such documents here (scipy's sparse product). Larger slices are
# sampled (seeded, uniform; a pattern in 1% of a million documents has ~40 documents in the
# sample), which bounds the cost whatever the index size; ``max_docs=0`` counts every document
# (the CLI's --max-docs 0), at a cost that grows linearly.
DEFAULT_MAX_DOCS = 4000


MAX_PAIRS = 5_000_000  # pairs kept (support and NPMI passed) at once: ~32 bytes each with their statistics
STEP_PRODUCTS = 1_000_000  # pair products per co-occurrence step: ~20 ms of scipy holding the GIL


class TooManyPairs(InputError):
    """The co-occurrence count would hold more pairs than the analysis may."""


def _column_blocks(B: sp.csr_matrix, products: int | None = None, A: sp.csr_matrix | None = None) -> list[np.ndarray]:
    """Latent columns in consecutive blocks whose share of the pair products stays near
    ``products``: column j's share is the summed size of the documents it occurs in (B^T nnz).
    Each block is one step of :func:`cooccurrence_blocks`, bounded in time (a cancel is
    honoured, and the server's other threads get the GIL back between steps: scipy holds it
    during a product) and in memory (its output is a few latents' columns, filtered at once).
    On 2,000 documents x 512 latents: one product took 11.3 s; 1M-product steps 9 s in all,
    the longest 20 ms."""
    products = products or STEP_PRODUCTS
    nnz = np.diff((B if A is None else A).indptr).astype(np.float64)  # each row's partners of a column of B
    share = np.asarray(B.T @ nnz).ravel()
    blocks, start, acc = [], 0, 0.0
    for j, w in enumerate(share):
        if acc and acc + w > products:
            blocks.append(np.arange(start, j))
            start, acc = j, 0.0
        acc += float(w)
    if start < B.shape[1]:
        blocks.append(np.arange(start, B.shape[1]))
    return blocks


def cooccurrence_blocks(B: sp.csr_matrix, min_support: int = 1, A: sp.csr_matrix | None = None):
    """The pairs i < j of columns of binary B co-occurring in >= ``min_support`` rows, a block
    of columns at a time: yields (i, j, count) arrays of B^T B[:, J], already filtered, so
    nothing is summed twice or held unfiltered (the whole product once built 27M pairs, 2.7 GB,
    in one 19 s step that ignored cancel and stalled the server). With ``A`` (the same rows, another
    view's latents): every pair (i of A, j of B), from A^T B[:, J] - the cross-view count costs
    what one view's does."""
    AT = (B if A is None else A).T.tocsr()
    Bc = B.tocsc()
    blocks = _column_blocks(B, A=A)
    for n, J in enumerate(blocks):
        checkpoint(n, len(blocks))
        R = (AT @ Bc[:, J]).tocoo()  # (latents, |J|): co-occurrence counts with the block's latents
        cols = J[R.col]
        keep = (R.data >= min_support) & ((R.row < cols) if A is None else True)
        yield R.row[keep].astype(np.int32), cols[keep].astype(np.int32), R.data[keep].astype(np.float64)


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
        if r % 1000 == 0:
            checkpoint()
        a, b = Xb.indptr[r], Xb.indptr[r + 1]
        if b - a <= per_doc:
            keep[a:b] = True
        else:
            keep[a + np.argpartition(-rel[a:b], per_doc - 1)[:per_doc]] = True
    rows = np.repeat(np.arange(Xb.shape[0]), np.diff(Xb.indptr))
    return sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], Xb.indices[keep])), shape=Xb.shape)


def npmi_pairs(B: sp.csr_matrix, min_support: int, min_npmi: float, max_pairs: int = MAX_PAIRS,
               A: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, npmi, count, max conditional probability) of the pairs with >= ``min_support``
    documents and NPMI >= ``min_npmi``, filtered block by block; past ``max_pairs`` kept pairs,
    :class:`TooManyPairs` (a one-line error naming what to change). With ``A``: pairs of a column
    of A (i) and one of B (j) over the same rows (:func:`cooccurrence_blocks`)."""
    n = B.shape[0]
    counts_b = np.asarray(B.sum(axis=0)).ravel()
    counts_a = counts_b if A is None else np.asarray(A.sum(axis=0)).ravel()
    parts, kept = [], 0
    for i, j, cij in cooccurrence_blocks(B, min_support, A):
        pi, pj, pij = counts_a[i] / n, counts_b[j] / n, cij / n
        with np.errstate(divide="ignore", invalid="ignore"):
            npmi = np.where(pij < 1, np.log(pij / (pi * pj)) / -np.log(pij), 1.0)
        keep = npmi >= min_npmi
        cond = np.maximum(cij / counts_a[i], cij / counts_b[j])
        parts.append((i[keep], j[keep], npmi[keep], cij[keep], cond[keep]))
        kept += int(keep.sum())
        if kept > max_pairs:
            raise TooManyPairs(f"correlations: more than {max_pairs:,} latent pairs pass min_support {min_support} and "
                               f"min_npmi {min_npmi} in this slice; raise them, lower per_doc or max_docs, or narrow the filter")
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]


def correlations(store: Store, index: str, params: CorrelationsParams | None = None, threshold: float = 0.0,
                 n_examples: int = 3, seed: int = 0) -> dict:
    """Latent pairs that co-occur (NPMI) in the slice ``params.where`` although their labels are
    unrelated. ``params.between`` names the views the pair's two latents come from: within one
    text (``response,response``, the default; or ``prompt,prompt``), or a prompt latent with a
    response latent of the same record (``prompt,response``: which kinds of prompt go with which
    habits of the answers), counted over the records that have both."""
    p = params or CorrelationsParams()
    where = p.to_filter(p.where)
    check_fields(store, index, where, "--where")
    view_a, view_b = p.views()
    cross = view_a != view_b
    min_npmi, max_label_sim, min_support, top = p.min_npmi, p.max_label_sim, p.min_support, p.top
    max_freq, per_doc, floor, max_docs = p.max_freq, p.per_doc, p.floor, p.max_docs
    slice_ = view_filter(where, "prompt") if cross else where  # cross-view: the records that have both views

    def load(view: str) -> DocMatrix:
        return load_matrix(store, index, slice_, fields=["content_hash", LENGTH_FIELD], floor=floor, max_docs=max_docs,
                           seed=seed, view=view)

    mb = load(view_b)
    ma = load(view_a) if cross else mb
    if ma.doc_ids != mb.doc_ids:  # both copies hold the same rows; a writer between the two reads breaks that
        raise AnalysisError("correlations: the prompt and response copies changed while being read; run it again")
    sampled_from = mb.sampled_from if mb.sampled_from is not None else mb.n_docs
    require_docs(mb, "the filter", minimum=2)
    keep_rows = distinct_rows(mb.payload)
    duplicates = mb.n_docs - len(keep_rows)
    if duplicates:
        mb, ma = subset(mb, keep_rows), subset(ma, keep_rows)
    recipe = require_index(store, index).recipe
    in_family = family_mask(recipe, p.family, ma.X.shape[1])
    members: dict[int, list[int]] = {}
    if not p.per_latent:
        target = label_targets(latent_table(store), ma.X.shape[1], in_family)
        merged = np.flatnonzero(target != np.arange(len(target)))
        if len(merged):
            for lat in merged.tolist():
                members.setdefault(int(target[lat]), [int(target[lat])]).append(lat)
            ma = DocMatrix(ma.doc_ids, merge_columns(ma.X, target), ma.payload, ma.sampled_from)
            mb = DocMatrix(mb.doc_ids, merge_columns(mb.X, target), mb.payload, mb.sampled_from) if cross else ma
    side_a = _Side(ma, threshold, max_freq, min_support, in_family, per_doc)
    side_b = _Side(mb, threshold, max_freq, min_support, in_family, per_doc) if cross else side_a
    i, j, npmi, cij, cond = npmi_pairs(side_b.B, min_support, min_npmi, A=side_a.B if cross else None)
    # The filters below cost a payload fetch and an embedding per new latent, so only the
    # strongest pairs are examined, at most MAX_EXAMINED_CAP (--max-label-sim 1e-8 once walked 40k pairs).
    # Strongest first; among equal NPMI (a perfect association reads 1.0 at any support) the pair
    # with more documents is the stronger evidence.
    order = np.lexsort((-cij, -np.round(npmi, 3)))[: min(MAX_EXAMINED_CAP, max(MAX_EXAMINED, 50 * top))]
    lat_ids = sorted(set(side_a.cols[i[order]].tolist()) | set(side_b.cols[j[order]].tolist()))
    lats = latent_cards(store, lat_ids)
    heads = _HeadSimilarity({l: c["label"] for l, c in lats.items()})
    heads.embed_all()
    peaks = None if cross else _PeakPositions(store, mb.doc_ids, view_b, members)  # same spot: only within one text
    pairs, dropped_similar, dropped_same_span, dropped_quality = [], 0, 0, 0
    strata = doc_strata(mb.payload)  # None: some document has no stored length
    for o in order:
        ci, cj = int(i[o]), int(j[o])
        a, b = int(side_a.cols[ci]), int(side_b.cols[cj])
        if p.min_quality > 0 and min(_quality(lats.get(a)), _quality(lats.get(b))) < p.min_quality:
            dropped_quality += 1  # first: it costs nothing, the filters below fetch and embed
            continue
        rows = np.intersect1d(side_a.Bc[:, ci].indices, side_b.Bc[:, cj].indices)
        strength = (np.asarray(side_a.Xs[rows][:, ci].sum(axis=1)).ravel() + np.asarray(side_b.Xs[rows][:, cj].sum(axis=1)).ravel()
                    if len(rows) else np.zeros(0))
        rows = rows[np.argsort(-strength, kind="stable")]
        if peaks is not None and peaks.same_span_share(rows[:SAME_SPAN_SAMPLE], a, b) >= SAME_SPAN_SHARE:
            dropped_same_span += 1
            continue
        sim = heads.similarity(a, b)
        both_concept = recipe.family_of(a) == recipe.family_of(b) == "concept"
        if sim > max_label_sim + (CONCEPT_PAIR_SIM_OFFSET if both_concept else 0.0):
            dropped_similar += 1
            continue
        ex = [mb.doc_ids[r] for r in rows[:n_examples]]
        pa, pb = lats.get(a, {}), lats.get(b, {})
        pair = {"a": a, "b": b, "label_a": pa.get("label", ""), "label_b": pb.get("label", ""),
                "quality_a": pa.get("quality"), "quality_b": pb.get("quality"),
                "family_a": pa.get("family"), "family_b": pb.get("family"),
                "npmi": round(float(npmi[o]), 4), "count": int(cij[o]), "max_cond_prob": round(float(cond[o]), 4),
                "label_sim": round(float(sim), 4), "examples": ex}
        if cross:
            pair |= {"view_a": view_a, "view_b": view_b}
        for side, lat in (("a", a), ("b", b)):
            if lat in members:  # the other latents counted as this one (same label)
                pair[f"merged_{side}"] = members[lat][1:]
        if strata is not None:  # co-occurrence expected within length strata: what length alone explains
            lm = length_matched_npmi(side_a.Bc[:, ci].indices, side_b.Bc[:, cj].indices, strata)
            pair |= {"npmi_length_matched": round(lm, 4), "length_driven": bool(lm < min_npmi)}
        pairs.append(pair)
        if len(pairs) >= top:
            break
    _attach_examples(store, pairs, view_a, view_b)
    return {"documents": mb.n_docs, "sampled_from": sampled_from, "duplicate_docs_skipped": duplicates,
            "between": p.between, "pairs_examined": min(len(order), len(npmi)), "per_doc": per_doc, "floor": floor,
            "latents_considered": int(len(side_a.cols) + (len(side_b.cols) if cross else 0)),
            "pairs_above_min_npmi": int(len(npmi)),
            "dropped_same_span": dropped_same_span, "dropped_similar_labels": dropped_similar,
            "dropped_low_quality": dropped_quality, "latents_merged_by_label": sum(len(m) - 1 for m in members.values()),
            "length_driven_pairs": sum(bool(x.get("length_driven")) for x in pairs),
            "pairs": pairs}


def _attach_examples(store: Store, pairs: list[dict], view_a: str, view_b: str) -> None:
    """Each pair's first example with both texts it fires in (one for a pair within a text, the
    prompt and the response for a cross-view pair), each around where its latent fires."""
    first = sorted({p["examples"][0] for p in pairs if p["examples"]})
    docs = {h.doc_id: h.payload for h in store.get_docs(first)} if first else {}
    for p in pairs:
        if p["examples"]:
            d = p["examples"][0]
            p["example"] = pair_example(d, docs.get(d, {}), [(view_a, p["a"]), (view_b, p["b"])])


def label_targets(table: LatentTable, n: int, in_family: np.ndarray) -> np.ndarray:
    """(n,) int: the column each latent id is counted under. Concept latents of ``in_family`` that
    share a label (not "unclear") count as one concept, under the lowest id of them; every other
    latent under its own. A concept SAE may split one concept over several latents (a Matryoshka
    family put 26 and 14 of 32 planted apologies on two latents both labelled "apology"): counted
    apart, neither met ``--min-support`` with a second concept planted beside it, and a pair of
    the two halves is news to nobody."""
    target = np.arange(n)
    first: dict[str, int] = {}
    for row in np.argsort(table.ids, kind="stable").tolist():
        lat, label, kind, concept = int(table.ids[row]), table.labels[row], table.kinds[row], bool(table.concept[row])
        if concept and kind == "concept" and label and 0 <= lat < n and in_family[lat]:
            target[lat] = first.setdefault(label.strip().lower(), lat)
    return target


def merge_columns(X: sp.csr_matrix, target: np.ndarray) -> sp.csr_matrix:
    """``X`` with each column folded into ``target[column]`` by maximum: a document has a concept
    as strongly as its strongest latent of it."""
    c = X.tocoo()
    col = target[c.col]
    order = np.lexsort((-c.data, col, c.row))
    r, k, v = c.row[order], col[order], c.data[order]
    first = np.ones(len(r), bool)
    first[1:] = (r[1:] != r[:-1]) | (k[1:] != k[:-1])
    return sp.csr_matrix((v[first], (r[first], k[first])), shape=X.shape)


class _Side:
    """One view's side of a pair count: the latents that can make a pair (present in at least
    ``min_support`` and at most ``max_freq`` of the documents, of the family asked), each
    document's most salient of them as a binary matrix, and its column form."""

    def __init__(self, m: DocMatrix, threshold: float, max_freq: float, min_support: int, in_family: np.ndarray,
                 per_doc: int):
        X = m.X.multiply(m.X > threshold).tocsr()
        X.eliminate_zeros()
        # Rare and ubiquitous latents go first: they cannot make a pair, and left in they would take
        # per-document slots from the latents that can.
        counts = np.diff(X.tocsc().indptr)
        self.cols = np.flatnonzero((counts <= max_freq * m.n_docs) & (counts >= min_support) & in_family)
        self.Xs = X[:, self.cols].tocsr()
        self.B = salient_binary(self.Xs, per_doc)
        self.Bc = self.B.tocsc()


def _quality(card: dict | None) -> float:
    """A label's quality for filtering; an unscored label passes (1.0): it is not known to be bad."""
    q = (card or {}).get("quality")
    return 1.0 if q is None else float(q)


def distinct_rows(payload: list[dict]) -> list[int]:
    """The first row of each distinct text (by content hash; a two-view record's hash covers both texts).

    Co-occurrence is evidence only once per text: a corpus that holds each text twice (two
    exports, a v1/v2 pair of which most outputs are equal) would otherwise turn every pair of
    latents that meet in two articles into a "pattern" of four documents at NPMI 1.0 - on a planted
    test those filled the whole top 50.
    """
    seen: set[str] = set()
    keep = []
    for r, p in enumerate(payload):
        h = p.get("content_hash")
        if h is None or h not in seen:
            keep.append(r)
            if h is not None:
                seen.add(h)
    return keep


def subset(m: DocMatrix, rows: list[int]) -> DocMatrix:
    return DocMatrix([m.doc_ids[r] for r in rows], m.X[rows], [m.payload[r] for r in rows])


_CONTEXT_WORDS = re.compile(r"\s*\([^()]*\)\s*$")


_LEXICAL = re.compile(r'^token "(.+?)"')


def label_head(label: str) -> str:
    """What a label says the latent fires on: an offline label without its "(context words)", a
    dictionary label as it is, and for a lexical dictionary label (``token "for" after "waiting"``)
    the token alone - the shared ``token "`` wording would make every lexical pair look alike."""
    m = _LEXICAL.match(label)
    if m:
        return m.group(1)
    return _CONTEXT_WORDS.sub("", label).strip() or label


HEAD_CACHE_SIZE = 50_000  # label heads whose unit vectors stay in memory (~1.5 KB each)
_head_cache: OrderedDict[str, np.ndarray] = OrderedDict()
_head_lock = threading.Lock()


class _HeadSimilarity:
    """Cosine between label heads, all embedded in one batch by :meth:`embed_all`."""

    def __init__(self, labels: dict[int, str]):
        self.heads = {l: label_head(t) for l, t in labels.items() if t}
        self.vecs: dict[str, np.ndarray] = {}

    def embed_all(self) -> None:
        """One batch for every head not embedded before (a pair at a time cost ~10 ms per latent).
        Heads are remembered across calls (LRU): embedding the heads of the ~3,000 strongest
        pairs' latents was most of a sampled correlation's time (0.6 of 1.1 s at 100k records),
        and the same labels come back in every analysis of an index."""
        want = set(self.heads.values())
        with _head_lock:
            for h in want & _head_cache.keys():
                _head_cache.move_to_end(h)
                self.vecs[h] = _head_cache[h]
        todo = sorted(want - set(self.vecs))
        if todo:
            new = {h: v / max(float(np.linalg.norm(v)), 1e-8) for h, v in zip(todo, get_embedder().encode(todo, batch_size=256))}
            self.vecs.update(new)
            with _head_lock:
                _head_cache.update(new)
                while len(_head_cache) > HEAD_CACHE_SIZE:
                    _head_cache.popitem(last=False)

    def similarity(self, a: int, b: int) -> float:
        ha, hb = self.heads.get(a), self.heads.get(b)
        if not ha or not hb:
            return 0.0
        if ha == hb:
            return 1.0
        return float(self.vecs[ha] @ self.vecs[hb])


class _PeakPositions:
    """Where each latent peaks in a document, fetched per document on first use: a token position,
    or for a concept-family latent ``-(unit + 1)`` (its sentence; :mod:`indexer.encode.pooling`)."""

    def __init__(self, store: Store, doc_ids: list[str], view: str = "response", members: dict[int, list[int]] | None = None):
        self.store, self.doc_ids, self.members = store, doc_ids, members or {}
        self.keys = VIEW_KEYS[view][1:4]  # the view's fires, offsets, units
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _load(self, rows: np.ndarray) -> None:
        need = [int(r) for r in rows if int(r) not in self.cache]
        if not need:
            return
        by_id = self.store.doc_payloads([self.doc_ids[r] for r in need], list(self.keys))
        fires_key, offsets_key, units_key = self.keys
        for r in need:
            p = by_id.get(self.doc_ids[r], {})
            f = unpack(p[fires_key], 2) if p.get(fires_key) else np.zeros((0, 2), np.int32)
            offs = unpack(p[offsets_key], 2) if p.get(offsets_key) else np.zeros((0, 2), np.int32)
            units = unpack(p[units_key], 2) if p.get(units_key) else np.zeros((0, 2), np.int32)
            self.cache[r] = (f[:, 0], f[:, 1], offs, units)  # latent ids ascending, peak token, token / unit spans

    def _peak(self, r: int, latent: int) -> int | None:
        """Where ``latent`` (or the first of the latents merged into it that fires here) peaks."""
        lat, tok = self.cache[r][:2]
        for one in self.members.get(latent, (latent,)):
            k = int(np.searchsorted(lat, one))
            if k < len(lat) and lat[k] == one:
                return int(tok[k])
        return None

    def _chars(self, r: int, peak: int) -> tuple[int, int] | None:
        """The character span of a peak: its token's, or its sentence's."""
        offs, units = self.cache[r][2:]
        table, i = (offs, peak) if peak >= 0 else (units, -peak - 1)
        return (int(table[i][0]), int(table[i][1])) if 0 <= i < len(table) else None

    def _near(self, r: int, pa: int, pb: int) -> bool:
        """Two peaks on the same span: tokens within SAME_SPAN_TOKENS; a sentence and whatever lies in it."""
        if pa >= 0 and pb >= 0:
            return abs(pa - pb) <= SAME_SPAN_TOKENS
        sa, sb = self._chars(r, pa), self._chars(r, pb)
        return sa is not None and sb is not None and sa[0] < sb[1] and sb[0] < sa[1]

    def same_span_share(self, rows: np.ndarray, a: int, b: int) -> float:
        """Share of ``rows`` where ``a`` and ``b`` peak on the same span (:meth:`_near`)."""
        self._load(rows)
        near = n = 0
        for r in rows:
            pa, pb = self._peak(int(r), a), self._peak(int(r), b)
            if pa is None or pb is None:
                continue
            n += 1
            near += self._near(int(r), pa, pb)
        return near / n if n else 0.0
