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
  cosine 0.27, while the heads sit at 0.13.
``min_quality`` (default 0: off) drops pairs with an unreliable label (quality below it): a
pair is news only if both names can be trusted. Each distinct text counts once (see :func:`distinct_texts`). Slices larger than ``max_docs``
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

import numpy as np
import scipy.sparse as sp

from analyses.length import LENGTH_FIELD, doc_strata, length_matched_npmi
from analyses.matrix import DocMatrix, check_fields, family_mask, latent_cards, load_matrix, require_docs
from analyses.params import CorrelationsParams
from indexer.core.errors import InputError
from indexer.core.progress import checkpoint
from indexer.encode.embedder import get_embedder
from indexer.encode.pooling import unpack
from indexer.store import Store
from indexer.store.catalog import require_index

SAME_SPAN_TOKENS = 2  # peaks this close (in tokens) count as the same spot
SAME_SPAN_SHARE = 0.25  # a pair peaking at the same spot in this share of its shared documents is dropped
SAME_SPAN_SAMPLE = 12  # shared documents checked per pair (the strongest)
DEFAULT_PER_DOC = 512
MAX_EXAMINED = 3000  # candidate pairs examined by the filters, strongest NPMI first
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


def _column_blocks(B: sp.csr_matrix, products: int | None = None) -> list[np.ndarray]:
    """Latent columns in consecutive blocks whose share of the pair products stays near
    ``products``: column j's share is the summed size of the documents it occurs in (B^T nnz).
    Each block is one step of :func:`cooccurrence_blocks`, bounded in time (a cancel is
    honoured, and the server's other threads get the GIL back between steps: scipy holds it
    during a product) and in memory (its output is a few latents' columns, filtered at once).
    On 2,000 documents x 512 latents: one product took 11.3 s; 1M-product steps 9 s in all,
    the longest 20 ms."""
    products = products or STEP_PRODUCTS
    nnz = np.diff(B.indptr).astype(np.float64)
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


def cooccurrence_blocks(B: sp.csr_matrix, min_support: int = 1):
    """The pairs i < j of columns of binary B co-occurring in >= ``min_support`` rows, a block
    of columns at a time: yields (i, j, count) arrays of B^T B[:, J], already filtered, so
    nothing is summed twice or held unfiltered (the whole product once built 27M pairs, 2.7 GB,
    in one 19 s step that ignored cancel and stalled the server)."""
    BT = B.T.tocsr()
    Bc = B.tocsc()
    blocks = _column_blocks(B)
    for n, J in enumerate(blocks):
        checkpoint(n, len(blocks))
        R = (BT @ Bc[:, J]).tocoo()  # (latents, |J|): co-occurrence counts with the block's latents
        cols = J[R.col]
        keep = (R.row < cols) & (R.data >= min_support)
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


def npmi_pairs(B: sp.csr_matrix, min_support: int, min_npmi: float,
               max_pairs: int = MAX_PAIRS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, npmi, count, max conditional probability) of the pairs with >= ``min_support``
    documents and NPMI >= ``min_npmi``, filtered block by block; past ``max_pairs`` kept pairs,
    :class:`TooManyPairs` (a one-line error naming what to change)."""
    n = B.shape[0]
    counts = np.asarray(B.sum(axis=0)).ravel()
    parts, kept = [], 0
    for i, j, cij in cooccurrence_blocks(B, min_support):
        pi, pj, pij = counts[i] / n, counts[j] / n, cij / n
        with np.errstate(divide="ignore", invalid="ignore"):
            npmi = np.where(pij < 1, np.log(pij / (pi * pj)) / -np.log(pij), 1.0)
        keep = npmi >= min_npmi
        cond = np.maximum(cij / counts[i], cij / counts[j])
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
    """Latent pairs that co-occur (NPMI) in the slice ``params.where`` although their labels are unrelated."""
    p = params or CorrelationsParams()
    where = p.to_filter(p.where)
    check_fields(store, index, where, "--where")
    min_npmi, max_label_sim, min_support, top = p.min_npmi, p.max_label_sim, p.min_support, p.top
    max_freq, per_doc, floor, max_docs = p.max_freq, p.per_doc, p.floor, p.max_docs
    m = load_matrix(store, index, where, fields=["content_hash", LENGTH_FIELD], floor=floor, max_docs=max_docs, seed=seed)
    sampled_from = m.sampled_from if m.sampled_from is not None else m.n_docs
    require_docs(m, "the filter", minimum=2)
    m, duplicates = distinct_texts(m)
    X = m.X.multiply(m.X > threshold).tocsr()
    X.eliminate_zeros()
    # Rare and ubiquitous latents go first: they cannot make a pair, and left in they would take
    # per-document slots from the latents that can.
    counts = np.diff(X.tocsc().indptr)
    in_family = family_mask(require_index(store, index).recipe, p.family, len(counts))
    cols = np.flatnonzero((counts <= max_freq * m.n_docs) & (counts >= min_support) & in_family)
    Xs = X[:, cols].tocsr()
    B = salient_binary(Xs, per_doc)
    i, j, npmi, cij, cond = npmi_pairs(B, min_support, min_npmi)
    # The filters below cost a payload fetch and an embedding per new latent, so only the
    # strongest pairs are examined, at most MAX_EXAMINED_CAP (--max-label-sim 1e-8 once walked 40k pairs).
    order = np.argsort(-npmi, kind="stable")[: min(MAX_EXAMINED_CAP, max(MAX_EXAMINED, 50 * top))]
    lat_ids = sorted(set(cols[i[order]].tolist()) | set(cols[j[order]].tolist()))
    lats = latent_cards(store, lat_ids)
    heads = _HeadSimilarity({l: c["label"] for l, c in lats.items()})
    heads.embed_all()
    peaks = _PeakPositions(store, m.doc_ids)
    pairs, dropped_similar, dropped_same_span, dropped_quality = [], 0, 0, 0
    Bc = B.tocsc()
    strata = doc_strata(m.payload)  # None: some document has no stored length
    for o in order:
        ci, cj = int(i[o]), int(j[o])
        a, b = int(cols[ci]), int(cols[cj])
        if p.min_quality > 0 and min(_quality(lats.get(a)), _quality(lats.get(b))) < p.min_quality:
            dropped_quality += 1  # first: it costs nothing, the filters below fetch and embed
            continue
        rows = np.intersect1d(Bc[:, ci].indices, Bc[:, cj].indices)
        strength = np.asarray(Xs[rows][:, [ci, cj]].sum(axis=1)).ravel() if len(rows) else np.zeros(0)
        rows = rows[np.argsort(-strength, kind="stable")]
        if peaks.same_span_share(rows[:SAME_SPAN_SAMPLE], a, b) >= SAME_SPAN_SHARE:
            dropped_same_span += 1
            continue
        sim = heads.similarity(a, b)
        if sim > max_label_sim:
            dropped_similar += 1
            continue
        ex = [m.doc_ids[r] for r in rows[:n_examples]]
        pa, pb = lats.get(a, {}), lats.get(b, {})
        pair = {"a": a, "b": b, "label_a": pa.get("label", ""), "label_b": pb.get("label", ""),
                "quality_a": pa.get("quality"), "quality_b": pb.get("quality"),
                "npmi": round(float(npmi[o]), 4), "count": int(cij[o]), "max_cond_prob": round(float(cond[o]), 4),
                "label_sim": round(float(sim), 4), "examples": ex}
        if strata is not None:  # co-occurrence expected within length strata: what length alone explains
            lm = length_matched_npmi(Bc[:, ci].indices, Bc[:, cj].indices, strata)
            pair |= {"npmi_length_matched": round(lm, 4), "length_driven": bool(lm < min_npmi)}
        pairs.append(pair)
        if len(pairs) >= top:
            break
    return {"documents": m.n_docs, "sampled_from": sampled_from, "duplicate_docs_skipped": duplicates, "pairs_examined": min(len(order), len(npmi)), "per_doc": per_doc, "floor": floor, "latents_considered": int(len(cols)), "pairs_above_min_npmi": int(len(npmi)),
            "dropped_same_span": dropped_same_span, "dropped_similar_labels": dropped_similar,
            "dropped_low_quality": dropped_quality, "length_driven_pairs": sum(bool(x.get("length_driven")) for x in pairs),
            "pairs": pairs}


def _quality(card: dict | None) -> float:
    """A label's quality for filtering; an unscored label passes (1.0): it is not known to be bad."""
    q = (card or {}).get("quality")
    return 1.0 if q is None else float(q)


def distinct_texts(m: DocMatrix) -> tuple[DocMatrix, int]:
    """Keep the first document of each distinct text (by content hash).

    Co-occurrence is evidence only once per text: a corpus that holds each text twice (two
    exports, a v1/v2 pair of which most outputs are equal) would otherwise turn every pair of
    latents that meet in two articles into a "pattern" of four documents at NPMI 1.0 - on a planted
    test those filled the whole top 50.
    """
    seen: set[str] = set()
    keep = []
    for r, p in enumerate(m.payload):
        h = p.get("content_hash")
        if h is None or h not in seen:
            keep.append(r)
            if h is not None:
                seen.add(h)
    if len(keep) == m.n_docs:
        return m, 0
    return DocMatrix([m.doc_ids[r] for r in keep], m.X[keep], [m.payload[r] for r in keep]), m.n_docs - len(keep)


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


class _HeadSimilarity:
    """Cosine between label heads, all embedded in one batch by :meth:`embed_all`."""

    def __init__(self, labels: dict[int, str]):
        self.heads = {l: label_head(t) for l, t in labels.items() if t}
        self.vecs: dict[str, np.ndarray] = {}

    def embed_all(self) -> None:
        """One batch for every head (a pair at a time cost ~10 ms per latent)."""
        todo = sorted(set(self.heads.values()) - set(self.vecs))
        if todo:
            for h, v in zip(todo, get_embedder().encode(todo, batch_size=256)):
                self.vecs[h] = v / max(float(np.linalg.norm(v)), 1e-8)

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

    def __init__(self, store: Store, doc_ids: list[str]):
        self.store, self.doc_ids = store, doc_ids
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _load(self, rows: np.ndarray) -> None:
        need = [int(r) for r in rows if int(r) not in self.cache]
        if not need:
            return
        by_id = {h.doc_id: h.payload for h in self.store.get_docs([self.doc_ids[r] for r in need])}
        for r in need:
            p = by_id.get(self.doc_ids[r], {})
            f = unpack(p["_fires"], 2) if p.get("_fires") else np.zeros((0, 2), np.int32)
            offs = unpack(p["_offsets"], 2) if p.get("_offsets") else np.zeros((0, 2), np.int32)
            units = unpack(p["_units"], 2) if p.get("_units") else np.zeros((0, 2), np.int32)
            self.cache[r] = (f[:, 0], f[:, 1], offs, units)  # latent ids ascending, peak token, token / unit spans

    def _peak(self, r: int, latent: int) -> int | None:
        lat, tok = self.cache[r][:2]
        k = int(np.searchsorted(lat, latent))
        return int(tok[k]) if k < len(lat) and lat[k] == latent else None

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
