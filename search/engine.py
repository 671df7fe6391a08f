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

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexer.catalog import DIRECTION_WEIGHT, QUALITY_WEIGHT, latents_for_query, require_fresh_latent_stats, require_index
from indexer.embedder import get_embedder
from indexer.pooling import fire_spans
from indexer.store import Filter, Hit, Store

METHODS = ("sae", "bm25", "dense", "hybrid")
MAX_K = 10_000
MAX_QUERY_CHARS = 2000
HIDDEN_PAYLOAD = {"_fires", "_offsets", "doc_id", "text", "dataset"}


class SearchError(ValueError):
    """Bad search input; reported as a one-line error (exit 2 / HTTP 422)."""


@dataclass
class SearchOptions:
    k: int = 10
    method: str = "sae"
    where: Filter = field(default_factory=Filter)
    rerank: bool = False
    expand: int = 0
    like: str | None = None
    temperature: float = 0.2
    n_latents: int = 100
    llm_filter: bool = False
    llm_model: str | None = None
    label_weight: float = 0.5
    direction_weight: float = DIRECTION_WEIGHT
    quality_weight: float = QUALITY_WEIGHT
    max_doc_freq: float = 0.5
    rrf_k: int = 60
    explain_latents: int = 5
    explain: bool = True  # evaluation turns it off: it ranks whole pools and only needs ids

    def validate(self, query: str | None) -> None:
        if self.method not in METHODS:
            raise SearchError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if not isinstance(self.k, int) or self.k <= 0 or self.k > MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}, got {self.k}")
        if self.like is None and (query is None or not query.strip()):
            raise SearchError("empty query (give a query, or --like DOC_ID)")
        if query is not None and len(query) > MAX_QUERY_CHARS:
            raise SearchError(f"query too long ({len(query)} > {MAX_QUERY_CHARS} characters)")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise SearchError("temperature must be a positive number")
        if self.expand < 0 or self.expand > 20:
            raise SearchError("expand must be between 0 and 20")
        if not 1 <= self.n_latents <= 1000:
            raise SearchError("n_latents must be between 1 and 1000")
        if self.like is not None and self.method not in ("sae",):
            raise SearchError("--like works with method sae")


@dataclass
class WeightedLatent:
    latent: int
    label: str
    weight: float
    similarity: float
    p90: float

    def as_dict(self) -> dict:
        return {"latent": self.latent, "label": self.label, "weight": round(self.weight, 5),
                "similarity": round(self.similarity, 4), "p90": round(self.p90, 4)}


def rank_weights(n: int, temperature: float) -> np.ndarray:
    """w_r = exp(-(r/n)/T) for ranks r = 0..n-1 (the paper's rank weighting)."""
    r = np.arange(n, dtype=np.float64)
    return np.exp(-(r / max(n, 1)) / temperature)


class SearchEngine:
    """Search over one index. Thread-safe; holds small caches (latent metadata, BM25)."""

    def __init__(self, store: Store, index: str):
        self.store = store
        self.index = index
        self.manifest = require_index(store, index)
        self._latent_cache: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._bm25 = None
        self._indexer = None

    # ------------------------------------------------------------------ latent metadata
    def latent_meta(self, ids: list[int]) -> dict[int, dict]:
        missing = [i for i in ids if i not in self._latent_cache]
        if missing:
            for p in self.store.get_latents(missing):
                pl = p.payload
                self._latent_cache[p.latent] = {
                    "label": pl.get("label", ""), "p90": float(pl.get("quantiles", {}).get("p90", 0.0) or 0.0),
                    "doc_freq": float(pl.get("doc_freq", 0.0)), "description": pl.get("description", ""),
                    "kind": pl.get("kind", "lexical"), "quality": pl.get("quality"),
                }
        return {i: self._latent_cache[i] for i in ids if i in self._latent_cache}

    # ------------------------------------------------------------------ query -> latents
    def query_latents(self, query: str, opts: SearchOptions) -> list[WeightedLatent]:
        ranked = latents_for_query(self.store, query, opts.n_latents * 2, label_weight=opts.label_weight,
                                   direction_weight=opts.direction_weight, quality_weight=opts.quality_weight)
        meta = self.latent_meta([i for i, _ in ranked])
        kept = [(i, s) for i, s in ranked if i in meta and meta[i]["p90"] > 0 and meta[i]["doc_freq"] <= opts.max_doc_freq]
        kept = kept[: opts.n_latents]
        if opts.llm_filter and kept:
            from search.llm_steps import llm_filter_latents

            keep_ids = llm_filter_latents(query, [(i, meta[i]["label"], meta[i]["description"]) for i, _ in kept], opts.llm_model)
            kept = [(i, s) for i, s in kept if i in keep_ids] or kept
        w = rank_weights(len(kept), opts.temperature)
        return [WeightedLatent(i, meta[i]["label"], float(wi), float(s), meta[i]["p90"]) for (i, s), wi in zip(kept, w)]

    def expansion_latents(self, query: str, opts: SearchOptions) -> list[WeightedLatent]:
        """Latents of LLM-written example phrases, run through the reader and SAE like documents."""
        from search.llm_steps import llm_expand

        phrases = llm_expand(query, opts.expand, opts.llm_model)
        if not phrases:
            return []
        indexer = self._get_indexer()
        from indexer.corpus import Record

        pts = indexer.encode_records([Record(id=str(i), text=p, fields={}) for i, p in enumerate(phrases)], "expansion")
        acc: dict[int, float] = {}
        ids = sorted({i for p in pts for i in p.sparse_indices})
        meta = self.latent_meta(ids)
        for p in pts:
            for i, a in zip(p.sparse_indices, p.sparse_values):
                m = meta.get(i)
                if m and m["p90"] > 0 and m["doc_freq"] <= opts.max_doc_freq:
                    acc[i] = acc.get(i, 0.0) + a / m["p90"] / len(pts)
        top = sorted(acc.items(), key=lambda t: -t[1])[: opts.n_latents]
        w = rank_weights(len(top), opts.temperature)
        return [WeightedLatent(i, meta[i]["label"], float(wi), float(v), meta[i]["p90"]) for (i, v), wi in zip(top, w)]

    def like_latents(self, doc_id: str, query: str | None, opts: SearchOptions) -> list[WeightedLatent]:
        docs = self.store.get_docs([doc_id], with_sparse=True)
        if not docs:
            raise SearchError(f"--like: no document {doc_id!r} in index {self.index!r}")
        sparse = docs[0].sparse or {}
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

    def _get_indexer(self):
        with self._lock:
            if self._indexer is None:
                from indexer.pipeline import Indexer
                from indexer.reader import ReaderConfig

                r = self.manifest["reader"]
                sae_path = self.manifest["sae"].get("path")
                self._indexer = Indexer(ReaderConfig(model=r["model"], layer=r["layer"], max_tokens=r["max_tokens"],
                                                     window=r["window"], overlap=r["overlap"]),
                                        None if sae_path in (None, "default") else sae_path, self.manifest.get("embedder"))
            return self._indexer

    # ------------------------------------------------------------------ search
    def search(self, query: str | None, opts: SearchOptions) -> dict[str, Any]:
        opts.validate(query)
        if opts.method == "bm25":
            hits = self._bm25_hits(query, opts)
            latents: list[WeightedLatent] = []
        elif opts.method == "dense":
            hits = self.store.search_dense(get_embedder().encode([query])[0].tolist(), opts.k, opts.where)
            latents = []
        else:
            require_fresh_latent_stats(self.store, self.index, self.store.read_manifest() or self.manifest)
            latents = self._latents(query, opts)
            if not latents:
                return {"results": [], "latents": [], "warning": "no latent matched the query"}
            idx = [w.latent for w in latents]
            vals = [w.weight / w.p90 for w in latents]
            limit = opts.k + (1 if opts.like else 0)
            if opts.method == "hybrid":
                dense = get_embedder().encode([query])[0].tolist()
                hits = self.store.search_hybrid(idx, vals, dense, limit, opts.where, rrf_k=opts.rrf_k, prefetch=max(limit, 100))
            else:
                hits = self.store.search_sparse(idx, vals, limit, opts.where)
            if opts.like:
                hits = [h for h in hits if h.doc_id != opts.like][: opts.k]
        rerank_info = None
        if opts.rerank and hits:
            from search.llm_steps import llm_rerank

            hits, rerank_info = llm_rerank(query or "", hits, opts.llm_model)
        results = self._explain(hits, latents if opts.explain else [], opts)
        out = {"results": results, "latents": [w.as_dict() for w in latents], "method": opts.method}
        if rerank_info:
            out["rerank"] = rerank_info
        return out

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

    def _bm25_hits(self, query: str, opts: SearchOptions) -> list[Hit]:
        from search.bm25 import allowed_mask, load_or_build_bm25

        with self._lock:
            if self._bm25 is None or self._bm25.key != str(self.store.count()):
                self._bm25 = load_or_build_bm25(self.store)
        bm = self._bm25
        top = bm.top(query, opts.k, allowed_mask(self.store, bm, opts.where))
        docs = {h.doc_id: h for h in self.store.get_docs([bm.doc_ids[i] for i, _ in top])}
        return [Hit(bm.doc_ids[i], s, docs[bm.doc_ids[i]].payload) for i, s in top if bm.doc_ids[i] in docs]

    def _explain(self, hits: list[Hit], latents: list[WeightedLatent], opts: SearchOptions) -> list[dict]:
        weights = {w.latent: w for w in latents}
        sparse_by_id: dict[str, dict[int, float]] = {}
        if weights and hits:
            for s in range(0, len(hits), 256):
                for d in self.store.get_docs([h.doc_id for h in hits[s : s + 256]], with_sparse=True):
                    sparse_by_id[d.doc_id] = d.sparse or {}
        out = []
        for h in hits:
            expl = []
            sparse = sparse_by_id.get(h.doc_id, {})
            contrib = [(lat, w, sparse[lat]) for lat, w in weights.items() if lat in sparse]
            contrib.sort(key=lambda t: -(t[1].weight * t[2] / t[1].p90))
            top = contrib[: opts.explain_latents]
            spans = fire_spans(h.payload, [lat for lat, _, _ in top])
            for lat, w, a in top:
                meta = self._latent_cache.get(lat, {})
                expl.append({"latent": lat, "label": w.label, "kind": meta.get("kind"), "quality": meta.get("quality"),
                             "weight": round(w.weight, 5), "activation": round(float(a), 4),
                             "contribution": round(w.weight * a / w.p90, 5), "spans": [spans[lat]] if lat in spans else []})
            fields = {k: v for k, v in h.payload.items() if k not in HIDDEN_PAYLOAD}
            out.append({"id": h.doc_id, "score": round(float(h.score), 6), "text": h.payload.get("text", ""),
                        "dataset": h.payload.get("dataset"), "fields": fields, "explanation": expl})
        return out
