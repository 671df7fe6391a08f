"""The latents of one index as arrays in memory: what every query -> latents step reads.

Why: a search used to ask Qdrant twice for the nearest label and snippet vectors (exact search
over 16k latents) and then fetch up to 800 latent payloads - with their 20 examples each - to
read p90, document frequency and quality: ~40 ms of CPU per query, most of it moving payloads
through Python. The table holds the unit label and snippet vectors (float32), p90, document
frequency, quality, labels and kinds of every latent in the index, so query -> latents is two
matrix-vector products and an argpartition (well under a millisecond at 16k latents).

It is loaded once per store (one scroll of the latents collection, then from the copy saved
beside the index) and reloaded when the index's manifest token changes: every writer of latent
statistics or labels rewrites the manifest, so a table is never older than the labels it serves.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from indexer.store import Store

TABLE_FIELDS = ["label", "kind", "quality", "description", "quantiles", "doc_freq", "family"]
FAMILIES = ("all", "token", "concept")


@dataclass
class LatentTable:
    token: str | None
    ids: np.ndarray  # (n,) int64 latent ids, ascending
    label_vecs: np.ndarray  # (n, dim) float32 unit rows
    snippet_vecs: np.ndarray  # (n, dim) float32 unit rows (the label's where a latent has no snippets)
    p90: np.ndarray  # (n,) float32
    doc_freq: np.ndarray  # (n,) float32
    quality: np.ndarray  # (n,) float32, NaN where unknown
    labels: list[str]
    kinds: list[str]
    descriptions: list[str]
    # each latent's mean cosine (label, snippet vector) to the 208 taxonomy concepts: how similar it
    # is to *any* property; query matching subtracts it. Computed by search.latents.centering on first
    # use (the taxonomy is the labels' vocabulary, above this floor); given here only by tests.
    label_ref: np.ndarray | None = None
    snippet_ref: np.ndarray | None = None
    # what readers compute once from this table (search's centering), dropped with it
    derived: dict = field(default_factory=dict, repr=False, compare=False)
    concept: np.ndarray | None = None  # (n,) bool: the latent is of the concept family (None: none is)

    def in_family(self, family: str) -> np.ndarray | None:
        """Rows of ``family`` (token | concept) as a mask; None for all."""
        if family == "all":
            return None
        concept = self.concept if self.concept is not None else np.zeros(self.size, bool)
        return concept if family == "concept" else ~concept

    @property
    def size(self) -> int:
        return len(self.ids)

    def rows(self, latents) -> np.ndarray:
        """Row of each latent id (-1 where the index has no such latent): one gather from a
        dense id -> row array (searchsorted over a document's ~2,900 latents per call cost
        ~0.1 ms, and pseudo-relevance feedback makes a dozen such calls per search)."""
        latents = np.asarray(latents, dtype=np.int64)
        index = self._rows_by_id
        inside = (latents >= 0) & (latents < len(index))
        return np.where(inside, index[np.clip(latents, 0, max(len(index) - 1, 0))], -1) if len(index) else np.full(len(latents), -1)

    @cached_property
    def _rows_by_id(self) -> np.ndarray:
        index = np.full(int(self.ids.max()) + 1 if self.size else 0, -1, np.int64)
        index[self.ids] = np.arange(self.size)
        return index

    def family_at(self, row: int) -> str:
        """The SAE family (token | concept) of the latent in ``row``."""
        return "concept" if self.concept is not None and bool(self.concept[row]) else "token"

    def meta(self, latent: int) -> dict | None:
        return self.metas([latent]).get(int(latent))

    def metas(self, latents) -> dict[int, dict]:
        """label, p90, doc_freq, description, kind, quality and family (token | concept) of each latent the index has."""
        out = {}
        for i, r in zip(np.asarray(latents, np.int64).tolist(), self.rows(latents).tolist()):
            if r >= 0:
                q = float(self.quality[r])
                out[i] = {"label": self.labels[r], "p90": float(self.p90[r]), "doc_freq": float(self.doc_freq[r]),
                          "description": self.descriptions[r], "kind": self.kinds[r], "quality": None if np.isnan(q) else round(q, 3),
                          "family": self.family_at(r)}
        return out


def _unit(rows: list[list[float]], dim: int) -> np.ndarray:
    m = np.zeros((len(rows), dim), np.float32)
    for i, r in enumerate(rows):
        if len(r) == dim:
            m[i] = r
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.maximum(n, 1e-12)


def build_table(store: Store, token: str | None) -> LatentTable:
    pts = store.get_latents(with_vectors=True, payload_fields=TABLE_FIELDS)
    dim = next((len(p.label_vec) for p in pts if p.label_vec), 0)
    labels = _unit([p.label_vec for p in pts], dim)
    snippets = _unit([p.snippet_vec or p.label_vec for p in pts], dim)
    pl = [p.payload for p in pts]
    return LatentTable(
        token=token,
        ids=np.array([p.latent for p in pts], np.int64),
        label_vecs=labels, snippet_vecs=snippets,
        p90=np.array([float((x.get("quantiles") or {}).get("p90", 0.0) or 0.0) for x in pl], np.float32),
        doc_freq=np.array([float(x.get("doc_freq", 0.0) or 0.0) for x in pl], np.float32),
        quality=np.array([np.nan if x.get("quality") is None else float(x["quality"]) for x in pl], np.float32),
        labels=[x.get("label", "") for x in pl], kinds=[x.get("kind", "lexical") for x in pl],
        concept=np.array([x.get("family") == "concept" for x in pl], bool),
        descriptions=[x.get("description", "") for x in pl],
    )


TABLE_FILE = "latent_table.npz"  # the table as last built, beside the index (its token inside)
_ARRAYS = ("ids", "label_vecs", "snippet_vecs", "p90", "doc_freq", "quality", "concept")


def save_table(store: Store, t: LatentTable) -> None:
    """Keep the table on disk: a CLI command used to spend ~3 s scrolling 16k latents out of
    Qdrant before its first query. Written atomically; a failure only costs the next reader a rebuild."""
    path = store.cache_file(TABLE_FILE)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.npz")
    strings = json.dumps({"labels": t.labels, "kinds": t.kinds, "descriptions": t.descriptions})
    try:
        np.savez(tmp, token=np.array(t.token or ""), strings=np.array(strings),
                 **{k: getattr(t, k) for k in _ARRAYS if getattr(t, k) is not None})
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def load_table(store: Store, token: str | None) -> LatentTable | None:
    """The table saved for this manifest token, or None (missing, stale, unreadable)."""
    if token is None:
        return None
    try:
        with np.load(store.cache_file(TABLE_FILE), allow_pickle=False) as z:
            if str(z["token"]) != token:
                return None
            arrays = {k: z[k] for k in _ARRAYS if k in z.files}
            strings = json.loads(str(z["strings"]))
    except (OSError, ValueError, KeyError):
        return None
    return LatentTable(token=token, labels=strings["labels"], kinds=strings["kinds"], descriptions=strings["descriptions"],
                       **arrays)


_tables: "weakref.WeakKeyDictionary[Store, LatentTable]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def latent_table(store: Store, token: str | None = None) -> LatentTable:
    """The store's table, rebuilt when the manifest token moved (pass ``token`` when the caller
    has just read it, to save the stat)."""
    token = store.manifest_token() if token is None else token
    t = _tables.get(store)
    if t is not None and t.token == token:
        return t
    with _lock:
        t = _tables.get(store)
        if t is None or t.token != token:
            t = load_table(store, token)
            if t is None:
                t = build_table(store, token)
                save_table(store, t)
            _tables[store] = t
    return t
