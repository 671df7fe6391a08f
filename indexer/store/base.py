"""The store interface: what saedex needs from Qdrant, written once over two thin backends.

Each index has two collections: ``docs`` (sparse ``sae`` vector of max-pooled latent
activations, dense ``dense`` sentence embedding, payload with the text) and ``latents`` (one
point per latent: dense ``label`` and ``snippets`` embeddings, payload with label, stats,
examples). Qdrant ids must be integers or UUIDs, so a document's own id lives in the payload
(``doc_id``) and its point id is the UUID5 of it - deterministic, which makes re-indexing
idempotent (an upsert of the same document overwrites itself).

The base class owns everything that does not depend on the backend: the index name, paging,
converting records to :class:`Hit`/:class:`LatentPoint`, chunked id lookups, manifest stamps
and ``with`` support. A backend (``edge.py``, ``server.py``) implements a handful of
primitives - retrieve, scroll, query, upsert, count - in its own client's vocabulary, as
qdrant-client's one ``QdrantBase`` sits over its local and remote clients.
"""

from __future__ import annotations

import json
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from indexer.core.errors import NotFoundError, UnavailableError
from indexer.core.filters import Filter, split_condition
from indexer.store.schema import HAS_PROMPT, VECTOR_OF, VIEWS
from indexer.store.sparse import SparseMap, sparse_of

_NS = uuid.UUID("6f1b6c1e-6a55-4c39-9d0e-5ae0e5ae0e5a")
DOCS, LATENTS = "docs", "latents"
ID_CHUNK = 512  # ids per retrieve call
LATENT_PAGE = 500


class StoreError(UnavailableError):
    """A store problem the user can act on (locked, missing, incompatible)."""


class IndexLocked(StoreError):
    """Another process has the index open (Qdrant Edge: one process per index)."""


class IndexNotFound(StoreError, NotFoundError):
    """No index of that name (HTTP 404, exit code 2)."""

    exit_code = NotFoundError.exit_code
    http_status = NotFoundError.http_status


@lru_cache(maxsize=1 << 15)
def point_id(doc_id: str) -> str:
    """A document's Qdrant point id (UUID5 of its id). Remembered: a search's hits and feedback
    documents recur across searches, and each uuid5 costs ~8 us (~0.2 ms a search)."""
    return str(uuid.uuid5(_NS, doc_id))


@dataclass(frozen=True)
class AllBut:
    """A payload selector: every field except ``keys`` (the field names of a user's data are
    not known in advance, the few to leave out are)."""

    keys: tuple[str, ...]


Payload = bool | list[str] | AllBut  # what a primitive returns of each record's payload


@dataclass
class DocPoint:
    doc_id: str
    sparse_indices: list[int]
    sparse_values: list[float]
    dense: list[float]
    payload: dict[str, Any]
    prompt_sparse: tuple[list[int], list[float]] | None = None  # the prompt view's vector (two-view records)

    def view_sparse(self, view: str) -> tuple[list[int], list[float]]:
        """The sparse vector of one view (a single-view record's prompt view is empty)."""
        if view == "response":
            return self.sparse_indices, self.sparse_values
        return self.prompt_sparse or ([], [])


@dataclass
class Hit:
    doc_id: str
    score: float
    payload: dict[str, Any]
    sparse: Mapping[int, float] | None = None  # a SparseMap when read from Qdrant


@dataclass
class LatentPoint:
    latent: int
    label_vec: list[float]
    snippet_vec: list[float]
    payload: dict[str, Any]


FUSIONS = ("rrf", "dbsf")


@dataclass
class Nearest:
    """One ranking query over ``docs``: sparse, dense, or both fused (reciprocal ranks, or scores: DBSF)."""

    sparse: tuple[list[int], list[float]] | None = None
    dense: list[float] | None = None
    rrf_k: int = 60
    prefetch: int = 200
    sparse_weight: float = 1.0  # weighted RRF: the sparse ranking's weight, the dense one's is 1
    fusion: str = "rrf"  # "rrf" (ranks) or "dbsf" (scores, each list normalised by its mean +- 3 sd)
    using: str = "sae"  # the named sparse vector ranked: a view's (schema.VECTOR_OF)


def build_filter(flt: Filter | None, models, as_bool=bool) -> Any:
    """Translate our filter into a client's model classes (both clients have the same shape;
    ``models`` provides ``Filter, FieldCondition, MatchAny, MatchValue, Range``).

    The meaning of a condition is :mod:`indexer.core.filters`'s (:func:`split_condition`): exact
    values become a match, each float the range [v, v], and a condition of several kinds a
    ``should``. Booleans are one ``MatchValue`` each: ``MatchAny`` takes only strings or integers,
    and Qdrant Edge's binding reads a Python ``True`` as the integer 1, so ``as_bool`` gives the
    backend's boolean (Edge: ``numpy.bool_``; before, a boolean filter matched nothing there)."""
    if flt is None or flt.is_empty():
        return None
    Q, FieldCondition, MatchAny, MatchValue, Range = models
    must = []
    for key, value in flt.equals.items():
        exact, floats = split_condition(value)
        bools = [v for v in exact if isinstance(v, bool)]
        exact = [v for v in exact if not isinstance(v, bool)]
        options = [FieldCondition(key=key, match=MatchValue(value=as_bool(v))) for v in bools]
        options += [FieldCondition(key=key, range=Range(gte=v, lte=v)) for v in floats]
        if exact:
            options.append(FieldCondition(key=key, match=MatchAny(any=exact) if len(exact) > 1 else MatchValue(value=exact[0])))
        must.append(options[0] if len(options) == 1 else Q(should=options))
    return Q(must=must)


def check_view(view: str) -> str:
    """The named sparse vector of a view; a one-line error for an unknown one."""
    if view not in VECTOR_OF:
        raise ValueError(f"view must be one of {', '.join(VIEWS)} (got {view!r})")
    return VECTOR_OF[view]


def view_filter(flt: Filter | None, view: str) -> Filter | None:
    """A slice of one view: the prompt view holds only two-view records (a single-view record's
    prompt is empty: counting or ranking it would dilute every prompt statistic)."""
    check_view(view)
    if view == "response":
        return flt
    return Filter({**(flt.equals if flt is not None else {}), HAS_PROMPT: True})


def _vector_names(with_sparse: bool, with_dense: bool = False, view: str = "response") -> list[str] | bool:
    return [v for v, on in ((check_view(view), with_sparse), ("dense", with_dense)) if on] or False


class Store(ABC):
    """One index in Qdrant. Use as a context manager (``with open_store(name) as store``)."""

    def __init__(self, name: str):
        self.name = name

    # ------------------------------------------------------------ float filters
    _index_lock = threading.Lock()

    def _index_float_fields(self, kind: str, flt: Filter | None) -> None:
        """Give every field a filter matches by float ranges a float payload index first. Without
        one each range condition reads every point's payload: 20 floats cost 67 ms a query on 250
        documents (and /healthz waited up to 300 ms meanwhile); with one, 18x less. Created once per
        field and store handle, the first time a filter needs it (an index built earlier gets
        them too)."""
        if kind != DOCS or flt is None or flt.is_empty():
            return
        done = self.__dict__.setdefault("_float_indexed", set())
        todo = [k for k, v in flt.equals.items() if k not in done and split_condition(v)[1]]
        if not todo:
            return
        with self._index_lock:
            for key in todo:
                if key not in done:
                    self._create_float_index(key)
                    done.add(key)

    def _create_float_index(self, key: str) -> None:
        """Backend primitive: a float payload index on ``key`` of the documents (idempotent)."""

    # ------------------------------------------------------------ backend primitives
    @abstractmethod
    def _retrieve(self, kind: str, ids: list, payload: Payload, vectors: list[str] | bool) -> list:
        """Records (with ``id``, ``payload``, ``vector``) of the ids present, any order."""

    @abstractmethod
    def _scroll(self, kind: str, flt: Filter | None, limit: int, offset: Any, payload: Payload,
                vectors: list[str] | bool) -> tuple[list, Any]:
        """One page of records and the next page's offset (None: last page)."""

    @abstractmethod
    def _query(self, q: Nearest, limit: int, flt: Filter | None, with_sparse: bool, payload: Payload = True) -> list:
        """Scored records of ``docs`` (with ``score``) for one ranking query; ``payload`` limits
        the payload returned (a whole document's text and firing offsets are most of a hit's bytes)."""

    @abstractmethod
    def _upsert(self, kind: str, points: list[tuple[int | str, dict[str, Any], dict[str, Any]]]) -> None:
        """Write points given as (id, vectors, payload); a sparse vector is an (indices, values) pair."""

    @abstractmethod
    def count(self, flt: Filter | None = None) -> int: ...

    # ------------------------------------------------------------ lifecycle (backend)
    @abstractmethod
    def cache_file(self, filename: str) -> Path:
        """Where derived per-index files (BM25, snippet embeddings, LLM labels) are cached."""

    @abstractmethod
    def create(self, dense_dim: int, label_dim: int) -> None: ...
    @abstractmethod
    def exists(self) -> bool: ...
    @abstractmethod
    def drop(self) -> None: ...
    @abstractmethod
    def close(self) -> None: ...

    def lock(self) -> None:
        """Take the writer's lock before anything is written (a no-op where the backend serialises)."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ manifest
    @abstractmethod
    def read_manifest(self) -> dict | None: ...
    @abstractmethod
    def _write_manifest(self, text: str) -> None: ...

    @abstractmethod
    def manifest_token(self) -> str | None:
        """A cheap token that changes whenever the manifest is written (None: no index). Long-lived
        readers (the server) poll it to notice labels refreshed, documents added, or the index
        dropped and re-created by another process."""

    def write_manifest(self, manifest: dict) -> None:
        """Every write gets a new ``revision``; ``generation`` is set once, when the index is
        created, so a dropped and re-created index has a new one."""
        import json

        manifest.setdefault("generation", uuid.uuid4().hex)
        manifest["revision"] = uuid.uuid4().hex
        self._write_manifest(json.dumps(manifest, indent=2))

    # ------------------------------------------------------------ documents
    @staticmethod
    def _hits(recs, with_sparse: bool, view: str = "response") -> list[Hit]:
        name = VECTOR_OF[view]
        return [Hit(doc_id=r.payload.get("doc_id", str(r.id)), score=float(getattr(r, "score", 0.0) or 0.0),
                    payload=dict(r.payload or {}), sparse=(sparse_of(r.vector, name) or SparseMap([], [])) if with_sparse else None)
                for r in recs]

    def upsert_docs(self, points: list[DocPoint]) -> None:
        """Write documents; a two-view record's prompt vector goes under its own name (an index
        created before views existed has no such vector: ingest refuses those records first)."""
        self._upsert(DOCS, [(point_id(p.doc_id), {"sae": (p.sparse_indices, p.sparse_values), "dense": p.dense,
                                                  **({VECTOR_OF["prompt"]: p.prompt_sparse} if p.prompt_sparse is not None else {})},
                             {**p.payload, "doc_id": p.doc_id}) for p in points])

    def existing_doc_hashes(self, doc_ids: list[str]) -> dict[str, str | None]:
        """id -> stored content hash (None for documents stored without one) of the ids present."""
        found: dict[str, str | None] = {}
        for s in range(0, len(doc_ids), ID_CHUNK):
            recs = self._retrieve(DOCS, [point_id(d) for d in doc_ids[s : s + ID_CHUNK]], ["doc_id", "content_hash"], False)
            found.update((r.payload["doc_id"], r.payload.get("content_hash")) for r in recs)
        return found

    def existing_doc_ids(self, doc_ids: list[str]) -> set[str]:
        return set(self.existing_doc_hashes(doc_ids))

    def doc_payloads(self, doc_ids: list[str], fields: list[str]) -> dict[str, dict]:
        """id -> those payload fields, of the ids present (chunked like every id lookup)."""
        out: dict[str, dict] = {}
        for s in range(0, len(doc_ids), ID_CHUNK):
            recs = self._retrieve(DOCS, [point_id(d) for d in doc_ids[s : s + ID_CHUNK]], ["doc_id", *fields], False)
            out.update((r.payload["doc_id"], dict(r.payload)) for r in recs)
        return out

    def get_docs(self, doc_ids: list[str], with_sparse: bool = False, view: str = "response") -> list[Hit]:
        """The documents present, in the order asked (``with_sparse``: the vector of ``view``)."""
        recs = self._retrieve(DOCS, [point_id(d) for d in doc_ids], True, _vector_names(with_sparse, view=view))
        by_id = {r.payload["doc_id"]: r for r in recs}
        return self._hits([by_id[d] for d in doc_ids if d in by_id], with_sparse, view)

    def scroll_docs(self, flt: Filter | None = None, with_sparse: bool = True, with_dense: bool = False,
                    payload_fields: list[str] | None = None, batch: int = 1000, view: str = "response") -> Iterator[list[Hit]]:
        """Every matching document, a page at a time, with the sparse vector of ``view``
        (``with_dense`` puts the dense vector in ``payload['_dense']``)."""
        offset = None
        payload = list(payload_fields) if payload_fields is not None else True
        while True:
            recs, offset = self._scroll(DOCS, flt, batch, offset, payload, _vector_names(with_sparse, with_dense, view))
            hits = self._hits(recs, with_sparse, view)
            if with_dense:
                for h, r in zip(hits, recs):
                    h.payload["_dense"] = list(r.vector["dense"])
            if hits:
                yield hits
            if offset is None:
                return

    # Searches return hits with payloads; ``with_sparse`` also returns each hit's SAE vector (what
    # a search's explanations read), saving a second round trip per search.
    @staticmethod
    def _selector(payload_fields: list[str] | None, without_fields: tuple[str, ...]) -> Payload:
        if payload_fields is not None:
            return ["doc_id", *payload_fields]
        return AllBut(tuple(without_fields)) if without_fields else True

    def search_sparse(self, indices: list[int], values: list[float], limit: int, flt: Filter | None = None,
                      with_sparse: bool = False, payload_fields: list[str] | None = None,
                      without_fields: tuple[str, ...] = (), view: str = "response") -> list[Hit]:
        """Documents ranked by the sparse product with one view's vectors; ``payload_fields`` keeps
        only those fields, ``without_fields`` drops those (search leaves out the firing spans: ~50
        KB of base64 a document, whose conversion held the GIL for a third of a search)."""
        payload = self._selector(payload_fields, without_fields)
        q = Nearest(sparse=(indices, values), using=check_view(view))
        return self._hits(self._query(q, limit, flt, with_sparse, payload), with_sparse, view)

    def search_dense(self, vector: list[float], limit: int, flt: Filter | None = None, with_sparse: bool = False,
                     without_fields: tuple[str, ...] = ()) -> list[Hit]:
        return self._hits(self._query(Nearest(dense=list(vector)), limit, flt, with_sparse, self._selector(None, without_fields)),
                          with_sparse)

    def search_hybrid(self, indices: list[int], values: list[float], vector: list[float], limit: int,
                      flt: Filter | None = None, rrf_k: int = 60, prefetch: int = 200, with_sparse: bool = False,
                      sparse_weight: float = 1.0, fusion: str = "rrf", without_fields: tuple[str, ...] = (),
                      view: str = "response") -> list[Hit]:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)} (got {fusion!r})")
        q = Nearest(sparse=(indices, values), dense=list(vector), rrf_k=rrf_k, prefetch=prefetch, sparse_weight=sparse_weight,
                    fusion=fusion, using=check_view(view))
        return self._hits(self._query(q, limit, flt, with_sparse, self._selector(None, without_fields)), with_sparse, view)

    # ------------------------------------------------------------ latents
    def upsert_latents(self, points: list[LatentPoint]) -> None:
        for s in range(0, len(points), 1000):
            self._upsert(LATENTS, [(p.latent, {"label": p.label_vec, "snippets": p.snippet_vec}, _packed(p.payload, p.latent))
                                   for p in points[s : s + 1000]])

    def get_latents(self, ids: list[int] | None = None, with_vectors: bool = False,
                    payload_fields: list[str] | None = None) -> list[LatentPoint]:
        """Latents (all, ascending, or ``ids`` in the order given, those present); ``payload_fields``
        limits the payload (a latent's examples are most of its bytes, and converting them holds the GIL)."""
        payload = list(payload_fields) if payload_fields is not None else True
        if payload_fields is not None:
            payload += [PACKED[f] for f in payload_fields if f in PACKED]
        if ids is not None:
            recs = self._retrieve(LATENTS, [int(i) for i in ids], payload, with_vectors)
        else:
            recs, offset = [], None
            while True:
                page, offset = self._scroll(LATENTS, None, LATENT_PAGE, offset, payload, with_vectors)
                recs.extend(page)
                if offset is None:
                    break
        out = []
        for r in recs:
            v = r.vector or {}
            out.append(LatentPoint(latent=int(r.id), label_vec=list(v.get("label", [])), snippet_vec=list(v.get("snippets", [])),
                                   payload=_unpacked(r.payload)))
        if ids is None:
            return sorted(out, key=lambda p: p.latent)
        order = {int(i): n for n, i in enumerate(ids)}
        return sorted(out, key=lambda p: order[p.latent])


# A latent's examples and negatives (most of its payload's bytes) are stored as JSON strings: a
# nested list of dicts crossed the Python/Rust boundary field by field (Qdrant Edge: 1.2 ms per
# latent, ~70% of writing a label refresh's latents), a string costs a copy. Indexes written
# before keep their lists, which read as they are.
PACKED = {"examples": "examples_json", "negatives": "negatives_json"}


def _packed(payload: dict, latent: int) -> dict:
    out = {k: v for k, v in payload.items() if k not in PACKED}
    for field, key in PACKED.items():
        if field in payload:
            out[key] = json.dumps(payload[field], ensure_ascii=False, separators=(",", ":"))
    out["latent"] = latent
    return out


def _unpacked(payload: Mapping | None) -> dict:
    out = dict(payload or {})
    for field, key in PACKED.items():
        if key in out:
            out[field] = json.loads(out.pop(key))
    return out


__all__ = ["DOCS", "LATENTS", "check_view", "view_filter", "DocPoint", "Filter", "Hit", "IndexLocked", "IndexNotFound", "LatentPoint", "Nearest",
           "SparseMap", "Store", "StoreError", "build_filter", "point_id"]
