"""Property search: query -> latents -> documents ranked by a sparse dot product in Qdrant.

The recipe (Jiang et al., "Interpretable embeddings with SAEs", App. A/G), extended:

1. Embed the query; take the top ``n`` (default 100) latents by similarity to their *label*
   and to their *activating snippets* (what the latent does, not only what it is called).
2. Optionally an LLM keeps only the relevant latents (``llm_filter``), and/or writes example
   phrases of the property whose own SAE latents are pooled in (``expand``).
3. Weight latents by rank r (0-based) with temperature T:  w_r = exp(-(r / n) / T).
4. Make latents comparable: divide activations by each latent's p90 over the index.
   score(doc) = sum_i w_i * a_i(doc) / p90_i.  The *query* is pre-scaled (w_i / p90_i), so
   Qdrant computes the score as a plain sparse dot product over the stored max-pooled vectors.
5. Optionally an LLM reranks the top 50.
Every hit is explained: the latents that contributed most, their weights and activations, and
the character spans where they fire.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from indexer.core.errors import InputError, NotFoundError
from indexer.encode.embedder import get_embedder
from indexer.encode.encoder import Encoder
from indexer.encode.pooling import SpanArrays, fire_spans, span_arrays, spans_in
from indexer.encode.recipe import read_manifest
from indexer.store import Filter, Hit, SparseMap, Store, schema, view_filter
from indexer.store.catalog import require_fresh_latent_stats, require_index
from indexer.store.columns import RowLocator, copy_for, fresh_copy
from indexer.store.latent_table import latent_table
from search.bm25 import allowed_mask, load_or_build_bm25
from search.latents import (CONCEPT_DIRECTION_WEIGHT, CONCEPT_SHARE, DIRECTION_WEIGHT, QUALITY_WEIGHT, latents_by_family,
                            opposite_rows, rank_weights, top_order)
from search.length_neutral import length_baseline, rank_length_neutral
from search.llm_steps import llm_expand, llm_filter_latents, llm_rerank
from search.meaning import MEANING_LATENTS, concept_directions, meaning_terms
from search.params import MAX_K, MAX_QUERY_CHARS, SearchParams


class SearchError(InputError):
    """Bad search input; reported as a one-line error (exit 2 / HTTP 422)."""


class SearchOptions(SearchParams):
    """A search's parameters (:class:`search.params.SearchParams`, what users set) and the
    engine's tuning, which evaluation and benchmarks vary (not exposed by the CLI or API)."""

    llm_model: Optional[str] = None
    label_weight: float = Field(0.5, ge=0, le=1)
    direction_weight: float = Field(DIRECTION_WEIGHT, ge=0, le=1)
    quality_weight: float = Field(QUALITY_WEIGHT, ge=0)
    max_doc_freq: float = Field(0.5, gt=0, le=1)
    # With both SAE families (family "all"): None ranks all latents together by query similarity;
    # a share in [0, 1] ranks each family on its own and gives the concept family that share of
    # the query's weight (each family's latents rank-weighted among themselves). Default 0.8:
    # see search.latents.CONCEPT_SHARE for how it was chosen and checked.
    concept_share: Optional[float] = Field(CONCEPT_SHARE, ge=0, le=1)
    concept_direction_weight: float = Field(CONCEPT_DIRECTION_WEIGHT, ge=0, le=1)
    # Hybrid fuses the SAE and dense rankings in Qdrant. DBSF (each list's scores normalised by
    # their mean +- 3 sd, then summed) keeps how *strongly* each side matched, which RRF's ranks
    # drop. Dev queries (SAE alone 0.371 MAP, dense 0.309): DBSF MAP 0.384, mp@10 0.547, mp@50
    # 0.455; RRF k = 200 0.370 / 0.547 / 0.452. Weighted RRF (a document at 0-based position p
    # scores 1 / ((p + 1) / weight + k - 1)) reached MAP 0.372-0.376 with the SAE weighted 3-6 at
    # k = 20-30, but mp@50 fell to ~0.41: the SAE's ranking took over the top.
    fusion: Literal["dbsf", "rrf"] = "dbsf"
    rrf_k: int = Field(200, ge=1)
    hybrid_sae_weight: float = Field(1.0, gt=0, le=10)  # weighted RRF: the SAE ranking's weight, dense's is 1
    explain_latents: int = Field(5, ge=0, le=100)
    explain: bool = True  # evaluation turns it off: it ranks whole pools and only needs ids
    feedback_weight: float = Field(0.5, ge=0, le=1)  # share of the feedback latents in the second pass
    feedback_latents: int = Field(40, ge=1, le=1000)
    # How many concept latents the query's meaning term (SearchParams.meaning_weight) reaches.
    meaning_latents: int = Field(MEANING_LATENTS, ge=1, le=100_000)

    @classmethod
    def of(cls, params: SearchParams, **tuning) -> "SearchOptions":
        """The options of a search as the CLI and the API run it, checked against its query
        (so a bad query fails before a model loads or a request queues)."""
        opts = cls.parse(**params.model_dump(), **tuning)
        opts.check(params.query)
        opts.to_filter(opts.where)  # mixed kinds, cost: 422 before the search queues
        return opts

    def check(self, query: str | None) -> None:
        """What needs the query beside the parameters: a query, or a document to search like."""
        if self.like is None and (query is None or not query.strip()):
            raise SearchError("empty query (give a query, or --like DOC_ID)")
        if query is not None and len(query) > MAX_QUERY_CHARS:
            raise SearchError(f"query too long ({len(query)} > {MAX_QUERY_CHARS} characters)")


@dataclass
class WeightedLatent:
    latent: int
    label: str
    weight: float
    similarity: float
    p90: float
    meaning: float = 0.0  # the part of ``weight`` that is the query's meaning (:mod:`search.meaning`)

    def as_dict(self) -> dict:
        out = {"latent": self.latent, "label": self.label, "weight": round(self.weight, 5),
               "similarity": round(self.similarity, 4), "p90": round(self.p90, 4)}
        return out | ({"meaning": round(self.meaning, 5)} if self.meaning else {})


_NOT_CACHED = object()
# A hit's explanation lists its strongest positive contributions; with the query's meaning term
# (:mod:`search.meaning`) some latents count *against* a document, and the strongest of those are
# listed apart ("against"), so a reader sees what held a hit back, not only what lifted it.
AGAINST_LATENTS = 2


class SearchEngine:
    """Search over one index. Thread-safe.

    The hot path touches Qdrant once per search (the ranking query; explanations read the
    columnar copy, or the hits' SAE vectors returned with that query where there is no fresh
    copy): query -> latents reads the index's in-memory latent table
    (:mod:`indexer.store.latent_table`), query embeddings and query -> latent results are
    remembered (LRU, keyed by the index's manifest token, so new labels or documents invalidate
    them), and the latent-statistics freshness check runs once per manifest change.
    """

    LATENT_CACHE = 2048
    RECHECK_S = 1.0  # how often the manifest token is polled for changes made elsewhere

    def __init__(self, store: Store, index: str):
        self.store = store
        self.index = index
        self.manifest = require_index(store, index)
        self._lock = threading.Lock()
        self._bm25 = None
        self._encoder: Encoder | None = None
        self._token: str | None = store.manifest_token()
        self._checked = time.monotonic()
        self._fresh_for: str | None = None  # token whose latent statistics were found fresh
        self._query_cache: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()
        self._spans: OrderedDict[tuple, SpanArrays | None] = OrderedDict()  # decoded firing spans, by document
        self._locators: dict[str, tuple] = {}  # view -> (token, RowLocator | None): explanations read the columnar copy
        self._baselines: dict[str, tuple] = {}  # view -> (token, LengthBaseline): --length-neutral's per-stratum means
        self._directions: tuple | None = None  # (concept recipe, ConceptDirections | None): the meaning term's decoder rows

    # ------------------------------------------------------------------ index state
    def token(self) -> str | None:
        """The manifest token, re-read at most every RECHECK_S seconds."""
        now = time.monotonic()
        if now - self._checked >= self.RECHECK_S:
            token = self.store.manifest_token()
            with self._lock:
                if token != self._token:
                    self._token = token
                    self.manifest = read_manifest(self.store, self.index) or self.manifest
                    self._query_cache.clear()
                    self._spans.clear()  # re-encoded documents keep their ids and texts
                self._checked = now
        return self._token

    def table(self):
        return latent_table(self.store, self.token())

    def locator(self, view: str = "response"):
        """One view's columnar copy's row locator while the copy holds every document (else None,
        and explanations fetch the hits' vectors from Qdrant); rebuilt when the manifest changes."""
        token = self.token()
        cached = self._locators.get(view)
        if cached is not None and cached[0] == token:
            return cached[1]
        loc = None
        try:
            copy = copy_for(self.store, self.manifest.recipe, view)
            if copy.is_fresh(self.store.count()):
                loc = RowLocator(copy)
        except Exception:  # noqa: BLE001 - the copy is an accelerator here; Qdrant answers without it
            loc = None
        self._locators[view] = (token, loc)
        return loc

    def _require_fresh(self) -> None:
        token = self.token()
        if self._fresh_for != token:
            require_fresh_latent_stats(self.store, self.index, self.manifest)  # re-read by token() on change
            self._fresh_for = token

    # ------------------------------------------------------------------ latent metadata
    def latent_meta(self, ids: list[int]) -> dict[int, dict]:
        return self.table().metas(ids)

    # ------------------------------------------------------------------ query -> latents
    def query_latents(self, query: str, opts: SearchOptions) -> list[WeightedLatent]:
        key = (self.token(), query, opts.n_latents, opts.temperature, opts.label_weight, opts.direction_weight,
               opts.quality_weight, opts.max_doc_freq, opts.family, opts.concept_share, opts.concept_direction_weight)
        table = self.table()
        if not opts.llm_filter:
            with self._lock:
                hit = self._query_cache.get(key)
                if hit is not None:
                    self._query_cache.move_to_end(key)
            if hit is not None:  # fresh objects: callers may add to weights
                ids, rows, weights, sims = hit
                return [WeightedLatent(int(i), table.labels[r], float(w), float(sm), float(table.p90[r]))
                        for i, r, w, sm in zip(ids.tolist(), rows.tolist(), weights.tolist(), sims.tolist())]
        both = table.concept is not None and table.concept.any() and not table.concept.all()
        split = opts.family == "all" and opts.concept_share is not None and both
        shares = (("token", 1 - opts.concept_share), ("concept", opts.concept_share)) if split else ((opts.family, 0.5),)
        ranked = self._family_latents(query, opts, [f for f, share in shares if share > 0])  # share 0: not ranked at all
        parts = [(ranked[f], share) for f, share in shares if share > 0]
        if opts.llm_filter:  # one LLM call for the query's latents of every family
            pooled = [k for part, _ in parts for k in part]
            if pooled:
                keep_ids = llm_filter_latents(query, [(i, table.labels[r], table.descriptions[r]) for i, _, r in pooled],
                                              opts.llm_model)
                if any(k[0] in keep_ids for k in pooled):
                    parts = [([k for k in part if k[0] in keep_ids], share) for part, share in parts]
        kept, w = [], []
        for part, share in parts:  # share 0.5: a family's ranks weighted as one family's are
            kept += part
            w += list(rank_weights(len(part), opts.temperature) * share * 2)
        if split:
            order = sorted(range(len(kept)), key=lambda j: -w[j])
            kept, w = [kept[j] for j in order], [w[j] for j in order]
        out = [WeightedLatent(i, table.labels[r], float(wi), float(s), float(table.p90[r])) for (i, s, r), wi in zip(kept, w)]
        if not opts.llm_filter:  # arrays, not objects: thousands of cached entries stay out of the GC's way
            entry = (np.array([i for i, _, _ in kept], np.int64), np.array([r for _, _, r in kept], np.int64),
                     np.asarray(w, np.float64), np.array([sm for _, sm, _ in kept], np.float64))
            with self._lock:
                self._query_cache[key] = entry
                while len(self._query_cache) > self.LATENT_CACHE:
                    self._query_cache.popitem(last=False)
        return out

    def _family_latents(self, query: str, opts: SearchOptions, families: list[str]) -> dict[str, list[tuple[int, float, int]]]:
        """Per family, the query's ``n_latents`` best latents (latent, similarity, table row) that
        fire here and pass the document-frequency cap; one similarity pass serves every family."""
        table = self.table()
        ranked = latents_by_family(self.store, query, opts.n_latents * 2,
                                   {f: opts.concept_direction_weight if f == "concept" else opts.direction_weight for f in families},
                                   label_weight=opts.label_weight, quality_weight=opts.quality_weight, table=table)
        out = {}
        for family, pairs in ranked.items():
            rows = table.rows([i for i, _ in pairs])
            ok = (rows >= 0) & (table.p90[rows] > 0) & (table.doc_freq[rows] <= opts.max_doc_freq)
            out[family] = [(i, s, int(r)) for (i, s), r, good in zip(pairs, rows.tolist(), ok.tolist()) if good][: opts.n_latents]
        return out

    def expansion_latents(self, query: str, opts: SearchOptions) -> list[WeightedLatent]:
        """Latents of LLM-written example phrases, run through the reader and SAE like documents."""
        phrases = llm_expand(query, opts.expand, opts.llm_model)
        if not phrases:
            return []
        pooled = self._get_encoder().encode_texts(phrases)
        acc: dict[int, float] = {}
        ids = sorted({int(i) for p in pooled for i in p.indices})
        meta = self.latent_meta(ids)
        for p in pooled:
            for i, a in zip(p.indices.tolist(), p.values.tolist()):
                m = meta.get(i)
                if m and m["p90"] > 0 and m["doc_freq"] <= opts.max_doc_freq:
                    acc[i] = acc.get(i, 0.0) + a / m["p90"] / len(pooled)
        top = sorted(acc.items(), key=lambda t: -t[1])[: opts.n_latents]
        w = rank_weights(len(top), opts.temperature)
        return [WeightedLatent(i, meta[i]["label"], float(wi), float(v), meta[i]["p90"]) for (i, v), wi in zip(top, w)]

    def like_latents(self, doc_id: str, query: str | None, opts: SearchOptions) -> list[WeightedLatent]:
        docs = self.store.get_docs([doc_id], with_sparse=True)
        if not docs:
            raise SearchError(f"--like: no document {doc_id!r} in index {self.index!r}")
        sparse = docs[0].sparse or {}
        in_family = self.table().in_family(opts.family)
        if in_family is not None:
            rows = self.table().rows(list(sparse))
            sparse = {i: a for (i, a), r in zip(sparse.items(), rows.tolist()) if r >= 0 and in_family[r]}
        meta = self.latent_meta(list(sparse))
        allowed = None
        if query and query.strip():
            allowed = {w.latent for w in self.query_latents(query, opts)}
        scored = [(i, a / meta[i]["p90"]) for i, a in sparse.items()
                  if i in meta and meta[i]["p90"] > 0 and meta[i]["doc_freq"] <= opts.max_doc_freq and (allowed is None or i in allowed)]
        scored.sort(key=lambda t: -t[1])
        scored = scored[:32]
        total = sum(s for _, s in scored) or 1.0
        return [WeightedLatent(i, meta[i]["label"], s / total, s, meta[i]["p90"]) for i, s in scored]

    def feedback_latents(self, latents: list[WeightedLatent], flt: Filter, opts: SearchOptions,
                         query: str | None = None) -> list[WeightedLatent]:
        """Rocchio-style pseudo-relevance feedback on SAE vectors: rank the documents with the
        query's latents, then add the latents that fire in a larger share of the top
        ``opts.feedback`` documents than of the index (enrichment = share in top - document
        frequency). A query names a property in a few words, which match latents mostly by their
        labels; the documents that match best show which latents the property actually fires.
        Latents named by the opposite of a ``query`` word stay out here too (:func:`opposite_rows`)."""
        table = self.table()
        idx = [w.latent for w in latents]
        loc = self.locator(opts.view)  # the top documents' vectors from the columnar copy, else from Qdrant
        top = self.store.search_sparse(idx, [w.weight / w.p90 for w in latents], opts.feedback, flt, with_sparse=loc is None,
                                       payload_fields=[], view=opts.view)  # ids are all it needs
        if len(top) < 2:
            return latents
        vectors = {h.doc_id: h.sparse.arrays() for h in top if isinstance(h.sparse, SparseMap)}
        if loc is not None:
            vectors.update(loc.vectors([h.doc_id for h in top]))
        missing = [h.doc_id for h in top if h.doc_id not in vectors]
        if missing:  # written after the copy was read
            vectors.update((d.doc_id, d.sparse.arrays()) for d in self.store.get_docs(missing, with_sparse=True, view=opts.view)
                           if d.sparse)
        doc_w = np.exp(-np.arange(len(top)) / max(len(top) / 2, 1))  # the first documents are likelier relevant
        doc_w /= doc_w.sum()
        kept = [(vectors[h.doc_id], dw) for h, dw in zip(top, doc_w) if h.doc_id in vectors]
        ids = np.concatenate([v[0] for v, _ in kept]) if kept else np.zeros(0, np.int64)  # every document's latents, in rank order
        vals = np.concatenate([v[1] for v, _ in kept]) if kept else np.zeros(0, np.float32)
        weights_in = np.repeat([dw for _, dw in kept], [len(v[0]) for v, _ in kept])
        rows = table.rows(ids)
        ok = rows >= 0
        rows, vals, weights_in = rows[ok], vals[ok], weights_in[ok]
        strong = vals >= 0.5 * table.p90[rows]  # fires at least half as strongly as usual
        share = np.bincount(rows[strong], weights_in[strong], minlength=table.size)
        cand = np.flatnonzero(share > 0)
        df = table.doc_freq[cand]
        score = (share[cand] - df) * np.clip(np.nan_to_num(table.quality[cand], nan=0.5), 0.0, 1.0) ** opts.quality_weight
        good = (df <= opts.max_doc_freq) & (table.p90[cand] > 0) & (score > 0)
        in_family = table.in_family(opts.family)
        if in_family is not None:
            good &= in_family[cand]
        if query:
            good &= ~opposite_rows(table, query)[cand]
        order = top_order(score[good], opts.feedback_latents)
        fb_rows = cand[good][order]
        fb_ids = table.ids[fb_rows]
        if not len(fb_ids):
            return latents
        fb_w = rank_weights(len(fb_ids), opts.temperature)
        q_total = sum(w.weight for w in latents) or 1.0
        merged = {w.latent: WeightedLatent(w.latent, w.label, (1 - opts.feedback_weight) * w.weight / q_total, w.similarity, w.p90)
                  for w in latents}
        for i, r, w in zip(fb_ids.tolist(), fb_rows.tolist(), (fb_w / fb_w.sum()).tolist()):
            add = opts.feedback_weight * w
            if i in merged:
                merged[i].weight += add
            else:
                merged[i] = WeightedLatent(i, table.labels[r], add, 0.0, float(table.p90[r]))
        # at most n_latents in all, as without feedback: the ranking query and the explanations stay the same size
        return sorted(merged.values(), key=lambda w: -w.weight)[: opts.n_latents]

    def with_meaning(self, latents: list[WeightedLatent], query: str, opts: SearchOptions) -> list[WeightedLatent]:
        """``latents`` plus the query's meaning through the concept latents (:mod:`search.meaning`):
        each of the ``opts.meaning_latents`` concept latents best aligned with the query (either
        sign) gets ``meaning_weight x total label weight x (q . d_i)`` per unit of activation added
        to its coefficient, so the term keeps its share whatever the label weights sum to. A
        latent named by the opposite of a query word gets no positive share (as in matching)."""
        if opts.family == "token":
            return latents
        directions = self._concept_directions()
        if directions is None:
            return latents
        table = self.table()
        total = sum(w.weight for w in latents) or 1.0
        ids, coef = meaning_terms(directions, get_embedder().encode_query(query), opts.meaning_latents, opts.meaning_weight * total)
        rows = table.rows(ids)
        opposite = opposite_rows(table, query)
        merged = {w.latent: w for w in latents}
        for i, c, r in zip(ids.tolist(), coef.tolist(), rows.tolist()):
            if r < 0 or table.p90[r] <= 0 or (c > 0 and opposite[r]):  # never fired here / named by an opposite
                continue
            add = c * float(table.p90[r])  # the ranking query's coefficient is weight / p90
            w = merged.get(i)
            if w is None:
                merged[i] = WeightedLatent(i, table.labels[r], add, 0.0, float(table.p90[r]), meaning=add)
            else:
                merged[i] = WeightedLatent(i, w.label, w.weight + add, w.similarity, w.p90, meaning=w.meaning + add)
        return sorted(merged.values(), key=lambda w: -w.weight)

    def _concept_directions(self):
        """The index's concept decoder rows (None: no usable concept family), loaded once per recipe."""
        concept = self.manifest.recipe.concept
        cached = self._directions
        if cached is None or cached[0] != concept:
            cached = self._directions = (concept, concept_directions(self.manifest.recipe))
        return cached[1]

    def _get_encoder(self) -> Encoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = Encoder.for_recipe(self.manifest.recipe)
            return self._encoder

    def document(self, doc_id: str, top: int = 15) -> dict:
        """A document with its strongest latents (by activation relative to the latent's p90)
        and where each fires: ``saedex document`` and ``GET .../documents/ID``."""
        if not 1 <= top <= 200:
            raise SearchError(f"top must be between 1 and 200, got {top}")
        docs = self.store.get_docs([doc_id], with_sparse=True)
        if not docs:
            raise NotFoundError(f"no document {doc_id!r} in index {self.index!r}")
        d = docs[0]
        out = {"id": d.doc_id, "text": d.payload.get("text", ""), "dataset": d.payload.get("dataset"),
               "fields": {k: v for k, v in d.payload.items() if k not in schema.HIDDEN},
               "latents": self._strongest(d.sparse or {}, d.payload, top, "response")}
        if schema.PROMPT_TEXT in d.payload:  # a two-view record: its prompt and the prompt's latents too
            p = self.store.get_docs([doc_id], with_sparse=True, view="prompt")
            out |= {"prompt": d.payload[schema.PROMPT_TEXT],
                    "prompt_latents": self._strongest((p[0].sparse if p else None) or {}, d.payload, top, "prompt")}
        return out

    def _strongest(self, sparse, payload: dict, top: int, view: str) -> list[dict]:
        """A text's strongest latents (activation relative to the latent's p90) and where each fires."""
        meta = self.latent_meta(list(sparse))
        ranked = sorted(((i, a, a / meta[i]["p90"]) for i, a in sparse.items() if i in meta and meta[i]["p90"] > 0),
                        key=lambda t: -t[2])[:top]
        spans = fire_spans(payload, [i for i, _, _ in ranked], schema.SPANS_OF[view])
        return [{"latent": i, "label": meta[i]["label"], "activation": round(a, 4), "relative": round(r, 3),
                 "spans": [spans[i]] if i in spans else []} for i, a, r in ranked]

    # ------------------------------------------------------------------ search
    def search(self, query: str | None, opts: SearchOptions) -> dict[str, Any]:
        opts.check(query)
        flt = view_filter(opts.to_filter(opts.where), opts.view)
        if opts.view != "response":
            self.manifest.state.require_view(opts.view, self.index)
        want = opts.offset + opts.k  # pages are cut from the top offset + k
        explain = opts.explain
        length_baselines: dict[str, float] = {}  # --length-neutral: what each hit's length stratum scores, subtracted
        if opts.method == "bm25":
            hits = self._bm25_hits(query, flt, want)
            latents: list[WeightedLatent] = []
        elif opts.method == "dense":
            hits = self.store.search_dense(get_embedder().encode_query(query).tolist(), want, flt, without_fields=schema.FIRING)
            latents = []
        else:
            self._require_fresh()
            latents = self._latents(query, opts)
            if not latents:
                return {"results": [], "latents": [], "warning": "no latent matched the query", "method": opts.method,
                        "offset": opts.offset, "next_offset": None}
            if opts.feedback and not opts.like:
                latents = self.feedback_latents(latents, flt, opts, query)
            if opts.method == "sae" and opts.meaning_weight > 0 and not opts.like:  # opts.check: a query unless --like
                latents = self.with_meaning(latents, query, opts)
            idx = [w.latent for w in latents]
            vals = [w.weight / w.p90 for w in latents]
            limit = want + (1 if opts.like else 0)
            vectors = explain and self.locator(opts.view) is None  # else explanations read the columnar copy
            if opts.method == "hybrid":
                dense = get_embedder().encode_query(query).tolist()
                hits = self.store.search_hybrid(idx, vals, dense, limit, flt, rrf_k=opts.rrf_k, prefetch=max(limit, 100),
                                                with_sparse=vectors, sparse_weight=opts.hybrid_sae_weight,
                                                fusion=opts.fusion, without_fields=schema.FIRING)
            elif opts.length_neutral:
                hits, length_baselines = self._length_neutral_hits(idx, vals, limit, flt, opts.view)
            else:
                hits = self.store.search_sparse(idx, vals, limit, flt, with_sparse=vectors, without_fields=schema.FIRING,
                                                view=opts.view)
            if opts.like:
                hits = [h for h in hits if h.doc_id != opts.like][:want]
        full_page = len(hits) >= want
        rerank_info = None
        if opts.rerank and hits:
            hits, rerank_info = llm_rerank(query or "", hits, opts.llm_model)
        hits = hits[opts.offset : want]
        results = self._explain(hits, latents if explain else [], opts)
        for r in results if length_baselines else []:  # a hit's score = its plain score minus this
            r["length_baseline"] = round(length_baselines[r["id"]], 6)
        out = {"results": results, "latents": self._with_family([w.as_dict() for w in latents]), "method": opts.method,
               "offset": opts.offset, "next_offset": want if full_page and want < MAX_K else None}
        if rerank_info:
            out["rerank"] = rerank_info
            if rerank_info["status"] != "ok":  # said where a client looks, not only in a counter
                out["warnings"] = [f"rerank {rerank_info['status']}: {rerank_info.get('error', '')}; "
                                   f"{rerank_info['failed']} of {rerank_info['failed'] + rerank_info['reranked']} hits keep their SAE order"]
        return out

    def _with_family(self, latents: list[dict]) -> list[dict]:
        """Each query latent's record with its SAE family (token | concept)."""
        table = self.table()
        rows = table.rows([d["latent"] for d in latents])
        return [d | {"family": table.family_at(r)} if r >= 0 else d for d, r in zip(latents, rows.tolist())]

    def _latents(self, query: str | None, opts: SearchOptions) -> list[WeightedLatent]:
        if opts.like:
            return self.like_latents(opts.like, query, opts)
        latents = self.query_latents(query or "", opts)
        if opts.expand:
            extra = self.expansion_latents(query or "", opts)
            merged: dict[int, WeightedLatent] = {w.latent: w for w in latents}
            for w in extra:
                if w.latent in merged:
                    merged[w.latent].weight += w.weight
                else:
                    merged[w.latent] = w
            latents = sorted(merged.values(), key=lambda w: -w.weight)
        return latents

    def _length_neutral_hits(self, idx: list[int], vals: list[float], limit: int, flt: Filter | None, view: str
                             ) -> tuple[list[Hit], dict[str, float]]:
        """The ranking of :mod:`search.length_neutral`, over the whole filtered slice of the
        columnar copy (rebuilt first if stale), and each hit's subtracted stratum score; the
        per-stratum means are computed once per manifest change."""
        copy = fresh_copy(self.store, self.manifest.recipe, progress=False, view=view)
        token = self.token()
        cached = self._baselines.get(view)
        if cached is None or cached[0] != token:
            cached = (token, length_baseline(copy))
            self._baselines[view] = cached
        ranked = rank_length_neutral(copy, cached[1], flt, idx, vals, limit)
        docs = {h.doc_id: h for h in self.store.get_docs([d for d, _, _ in ranked], view=view)}
        hits = []
        for doc_id, score, _ in ranked:
            if doc_id in docs:  # a document deleted since the copy was read is left out
                docs[doc_id].score = score
                hits.append(docs[doc_id])
        return hits, {doc_id: base for doc_id, _, base in ranked}

    def _bm25_hits(self, query: str, flt: Filter, want: int) -> list[Hit]:
        with self._lock:
            if self._bm25 is None or self._bm25.key != str(self.store.count()):
                self._bm25 = load_or_build_bm25(self.store)
        bm = self._bm25
        top = bm.top(query, want, allowed_mask(self.store, bm, flt))
        docs = {h.doc_id: h for h in self.store.get_docs([bm.doc_ids[i] for i, _ in top])}
        return [Hit(bm.doc_ids[i], s, docs[bm.doc_ids[i]].payload) for i, s in top if bm.doc_ids[i] in docs]

    SPAN_CACHE = 2048  # documents whose decoded firing spans are kept (~30 KB each)

    def _spans_for(self, hits: list[Hit], view: str = "response") -> dict[str, SpanArrays | None]:
        """The hits' decoded firing spans, remembered by document and content (LRU): the same
        documents answer many queries, and decoding three base64 arrays per hit held the GIL for
        a tenth of a search. Search hits come without the firing payload (~50 KB a document);
        the spans of documents not remembered are read in one lookup."""
        out: dict[str, SpanArrays | None] = {}
        todo: list[tuple[tuple, Hit]] = []
        with self._lock:
            for h in hits:
                key = (h.doc_id, h.payload.get("content_hash"), view)
                got = self._spans.get(key, _NOT_CACHED)
                if got is _NOT_CACHED:
                    todo.append((key, h))
                else:
                    self._spans.move_to_end(key)
                    out[h.doc_id] = got
        keys = schema.SPANS_OF[view]
        fetch = [h.doc_id for _, h in todo if keys[0] not in h.payload]
        fetched = self.store.doc_payloads(fetch, list(keys)) if fetch else {}
        decoded = [(key, h.doc_id, span_arrays(h.payload if keys[0] in h.payload else fetched.get(h.doc_id, {}), keys))
                   for key, h in todo]
        with self._lock:
            for key, doc_id, got in decoded:
                out[doc_id] = self._spans[key] = got
            while len(self._spans) > self.SPAN_CACHE:
                self._spans.popitem(last=False)
        return out

    def _explain(self, hits: list[Hit], latents: list[WeightedLatent], opts: SearchOptions) -> list[dict]:
        """Each hit's strongest contributing latents with their firing spans. Activations come from
        the columnar copy (:meth:`locator`), else from the SAE vectors the search returned with the
        hits; only hits that have neither (an LLM rerank's) are fetched from Qdrant."""
        weights = {w.latent: w for w in latents}
        table = self.table() if weights else None
        wl = list(weights.values())
        lat_ids = np.array([w.latent for w in wl], np.int64)
        scale = np.array([w.weight / w.p90 for w in wl], np.float64)
        rows = table.rows(lat_ids) if weights else None
        acts_of: dict[str, np.ndarray] = {}
        if weights:
            need = [h.doc_id for h in hits if h.sparse is None]
            loc = self.locator(opts.view) if need else None
            if loc is not None:
                acts_of = loc.activations(need, lat_ids)
            missing = [d for d in need if d not in acts_of]
            if missing:  # no fresh copy, or an LLM rerank brought other hits
                fetched = {d.doc_id: d.sparse or {} for d in self.store.get_docs(missing, with_sparse=True, view=opts.view)}
                for h in hits:
                    if h.sparse is None and h.doc_id not in acts_of:
                        h.sparse = fetched.get(h.doc_id, {})
        spans_of = self._spans_for(hits, opts.view) if weights else {}

        def entry(j: int, acts: np.ndarray, contrib: np.ndarray, spans: dict) -> dict:
            """One query latent's part in a hit: what it is, how strongly it fired, what it added."""
            w, lat, r = wl[j], int(lat_ids[j]), int(rows[j])
            q = float(table.quality[r]) if r >= 0 else float("nan")
            return ({"latent": lat, "label": w.label, "family": table.family_at(r) if r >= 0 else None,
                     "kind": table.kinds[r] if r >= 0 else None,
                     "quality": None if q != q else q, "weight": round(w.weight, 5), "activation": round(float(acts[j]), 4),
                     "contribution": round(float(contrib[j]), 5), "spans": [spans[lat]] if lat in spans else []}
                    | ({"meaning": round(w.meaning, 5)} if w.meaning else {}))

        out = []
        for h in hits:
            expl, against = [], []
            if weights:
                if h.doc_id in acts_of:
                    acts = acts_of[h.doc_id]
                else:
                    sparse = h.sparse if isinstance(h.sparse, SparseMap) else SparseMap(list((h.sparse or {}).keys()),
                                                                                        list((h.sparse or {}).values()))
                    acts = sparse.lookup(lat_ids.tolist())
                contrib = acts * scale
                present = np.flatnonzero(acts > 0)
                top = present[np.argsort(-contrib[present], kind="stable")][: opts.explain_latents]
                top = top[contrib[top] > 0]  # a latent the meaning term weighs negatively is never a reason for a hit
                lowering = present[contrib[present] < 0]  # the query's meaning points away from these
                lowering = lowering[np.argsort(contrib[lowering], kind="stable")][:AGAINST_LATENTS]
                spans = spans_in(spans_of.get(h.doc_id), [int(lat_ids[j]) for j in (*top, *lowering)])
                expl = [entry(j, acts, contrib, spans) for j in top.tolist()]
                against = [entry(j, acts, contrib, spans) for j in lowering.tolist()]
            fields = {k: v for k, v in h.payload.items() if k not in schema.HIDDEN}
            out.append({"id": h.doc_id, "score": round(float(h.score), 6), "text": h.payload.get("text", ""),
                        "dataset": h.payload.get("dataset"), "fields": fields, "explanation": expl,
                        **({"against": against} if against else {}),
                        **({"prompt": h.payload[schema.PROMPT_TEXT]} if schema.PROMPT_TEXT in h.payload else {}),
                        **({"view": opts.view} if opts.view != "response" else {})})
        return out
