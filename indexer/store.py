"""One small store interface, two Qdrant backends.

- :class:`EdgeStore` (default): Qdrant Edge (``qdrant-edge-py``), Qdrant's engine in-process; one
  shard directory per collection under ``$SAEDEX_HOME/indexes/NAME``. 1 ms sparse search at 200k
  docs, where qdrant-client's pure-Python local mode takes hundreds.
- :class:`ServerStore`: a Qdrant server or cluster through ``qdrant-client`` (``--qdrant-url``).

Each index has two collections: ``docs`` (sparse ``sae`` vector of max-pooled latent
activations, dense ``dense`` sentence embedding, payload with the text) and ``latents`` (one
point per latent: dense ``label`` and ``snippets`` embeddings, payload with label, stats,
examples). Qdrant ids must be integers or UUIDs, so a document's own id lives in the payload
(``doc_id``) and its point id is the UUID5 of it - deterministic, which makes re-indexing
idempotent (an upsert of the same document overwrites itself).
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np

from indexer.errors import UnavailableError

_NS = uuid.UUID("6f1b6c1e-6a55-4c39-9d0e-5ae0e5ae0e5a")
DOCS, LATENTS = "docs", "latents"


class StoreError(UnavailableError):
    """A store problem the user can act on (locked, missing, incompatible)."""


class IndexLocked(StoreError):
    """Another process has the index open (Qdrant Edge: one process per index)."""


class IndexNotFound(StoreError):
    """No index of that name (HTTP 404, exit code 2)."""

    exit_code = 2
    http_status = 404


def point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_NS, doc_id))


@dataclass
class DocPoint:
    doc_id: str
    sparse_indices: list[int]
    sparse_values: list[float]
    dense: list[float]
    payload: dict[str, Any]


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


@dataclass
class Filter:
    """Conjunction of ``field == value`` conditions (values may be lists: any-of)."""

    equals: dict[str, Any] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.equals


class Store(ABC):
    """What the rest of saedex needs from Qdrant - nothing more."""

    manifest_path: Path | None = None

    @abstractmethod
    def cache_file(self, filename: str) -> Path:
        """Where derived per-index files (BM25, snippet embeddings, LLM labels) are cached."""

    @abstractmethod
    def create(self, dense_dim: int, label_dim: int) -> None: ...
    @abstractmethod
    def exists(self) -> bool: ...
    @abstractmethod
    def read_manifest(self) -> dict | None: ...
    @abstractmethod
    def write_manifest(self, manifest: dict) -> None: ...

    @abstractmethod
    def manifest_token(self) -> str | None:
        """A cheap token that changes whenever the manifest is written (None: no index). Long-lived
        readers (the server) poll it to notice labels refreshed, documents added, or the index
        dropped and re-created by another process."""

    @staticmethod
    def _stamp(manifest: dict) -> dict:
        """Every manifest write gets a new ``revision``; ``generation`` is set once, when the index
        is created, so a dropped and re-created index has a new one."""
        manifest.setdefault("generation", uuid.uuid4().hex)
        manifest["revision"] = uuid.uuid4().hex
        return manifest
    @abstractmethod
    def upsert_docs(self, points: list[DocPoint]) -> None: ...
    @abstractmethod
    def existing_doc_hashes(self, doc_ids: list[str]) -> dict[str, str | None]:
        """id -> stored content hash (None for documents stored without one) of the ids present."""

    def existing_doc_ids(self, doc_ids: list[str]) -> set[str]:
        return set(self.existing_doc_hashes(doc_ids))

    def lock(self) -> None:
        """Take the writer's lock before anything is written (a no-op where the backend serialises)."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
    @abstractmethod
    def count(self, flt: Filter | None = None) -> int: ...
    @abstractmethod
    def get_docs(self, doc_ids: list[str], with_sparse: bool = False) -> list[Hit]: ...
    @abstractmethod
    def scroll_docs(
        self, flt: Filter | None = None, with_sparse: bool = True, with_dense: bool = False,
        payload_fields: list[str] | None = None, batch: int = 1000,
    ) -> Iterator[list[Hit]]: ...
    # Searches return hits with payloads; ``with_sparse`` also returns each hit's SAE vector (what
    # a search's explanations read), saving a second round trip per search.
    @abstractmethod
    def search_sparse(self, indices: list[int], values: list[float], limit: int, flt: Filter | None = None,
                      with_sparse: bool = False) -> list[Hit]: ...
    @abstractmethod
    def search_dense(self, vector: list[float], limit: int, flt: Filter | None = None, with_sparse: bool = False) -> list[Hit]: ...
    @abstractmethod
    def search_hybrid(
        self, indices: list[int], values: list[float], vector: list[float], limit: int,
        flt: Filter | None = None, rrf_k: int = 60, prefetch: int = 200, with_sparse: bool = False,
    ) -> list[Hit]: ...
    @abstractmethod
    def upsert_latents(self, points: list[LatentPoint]) -> None: ...
    @abstractmethod
    def get_latents(self, ids: list[int] | None = None, with_vectors: bool = False,
                    payload_fields: list[str] | None = None) -> list[LatentPoint]:
        """Latents (all, ascending, or ``ids`` in order); ``payload_fields`` limits the payload
        (a latent's examples are most of its bytes, and converting them holds the GIL)."""
    @abstractmethod
    def search_latents(self, vector: list[float], using: str, limit: int) -> list[tuple[int, float]]: ...
    @abstractmethod
    def drop(self) -> None: ...
    @abstractmethod
    def close(self) -> None: ...


# --------------------------------------------------------------------------- Qdrant Edge


def _build_filter(flt: Filter | None, Q, FieldCondition, MatchAny, MatchValue, Range):
    """Translate our filter into either client's model classes (they have the same shape).

    Qdrant matches strings, integers and booleans exactly; a float (``score=1.5``) has no exact
    match, so it becomes the range [v, v], and an any-of list holding floats a ``should`` of
    those (values are validated upstream: finite, see :func:`search.filters.check_value`)."""
    if flt is None or flt.is_empty():
        return None
    must = []
    for key, value in flt.equals.items():
        is_list = isinstance(value, (list, tuple, set))
        values = list(value) if is_list else [value]
        floats = [v for v in values if isinstance(v, float)]
        exact = [v for v in values if not isinstance(v, float)]
        if not floats:
            must.append(FieldCondition(key=key, match=MatchAny(any=exact) if is_list else MatchValue(value=value)))
            continue
        options = [FieldCondition(key=key, range=Range(gte=v, lte=v)) for v in floats]
        if exact:
            options.append(FieldCondition(key=key, match=MatchAny(any=exact)))
        must.append(options[0] if len(options) == 1 else Q(should=options))
    return Q(must=must)


def _edge_filter(flt: Filter | None):
    import qdrant_edge as q

    return _build_filter(flt, q.Filter, q.FieldCondition, q.MatchAny, q.MatchValue, q.RangeFloat)


class SparseMap(Mapping):
    """A document's SAE vector as read from Qdrant, with a read-only dict view.

    Why not a dict: a whole document has ~2,900 non-zero latents, and building dicts (or numpy
    arrays) for the ten hits of a search cost 1-4 ms of a ~10 ms search, while explanations only
    look up the query's ~100 latents: :meth:`lookup` bisects Qdrant's (sorted) index list."""

    __slots__ = ("_idx", "_val", "_dict", "_arrays", "_is_sorted")

    def __init__(self, indices, values):
        self._idx, self._val = indices, values  # as Qdrant returned them (lists, in its order)
        self._dict: dict[int, float] | None = None
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._is_sorted: bool | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(latent ids int64, activations float32) in Qdrant's order."""
        if self._arrays is None:
            self._arrays = (np.asarray(self._idx, dtype=np.int64), np.asarray(self._val, dtype=np.float32))
        return self._arrays

    def lookup(self, latents) -> np.ndarray:
        """Activation of each latent (0 where the document has none)."""
        from bisect import bisect_left

        idx, val = self._idx, self._val
        if self._is_sorted is None:  # Qdrant keeps sparse vectors sorted by index; a spot check, not a pass
            n = len(idx)
            probe = [idx[i] for i in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})] if n else []
            self._is_sorted = all(a < b for a, b in zip(probe, probe[1:]))
        out = np.zeros(len(latents), np.float32)
        if not self._is_sorted:
            d = self._d()
            for j, lat in enumerate(latents):
                out[j] = d.get(int(lat), 0.0)
            return out
        n = len(idx)
        for j, lat in enumerate(latents):
            p = bisect_left(idx, lat)
            if p < n and idx[p] == lat:
                out[j] = val[p]
        return out

    def _d(self) -> dict[int, float]:
        if self._dict is None:
            self._dict = dict(zip(map(int, self._idx), map(float, self._val)))
        return self._dict

    def __getitem__(self, key: int) -> float:
        return self._d()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._d()

    def __iter__(self):
        return iter(self._d())

    def __len__(self) -> int:
        return len(self._idx)

    def __eq__(self, other: object) -> bool:
        return self._d() == (dict(other) if isinstance(other, Mapping) else other)


def _sparse_of(vector: Any, name: str = "sae") -> SparseMap | None:
    if not vector:
        return None
    v = vector.get(name) if isinstance(vector, dict) else None
    if v is None:
        return None
    if isinstance(v, dict):
        return SparseMap(v["indices"], v["values"])
    return SparseMap(v.indices, v.values)  # each attribute access converts the whole vector: once


class EdgeStore(Store):
    """Qdrant Edge shards in a local folder. One process per index at a time (WAL lock)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self._shards: dict[str, Any] = {}
        self._lock_fd: int | None = None

    def _open(self, name: str):
        if name not in self._shards:
            from qdrant_edge import EdgeShard

            path = self.root / name
            if not path.exists():
                raise StoreError(f"index at {self.root} has no {name} collection (was it created?)")
            try:
                self._shards[name] = EdgeShard.load(str(path))
            except Exception as e:  # noqa: BLE001
                msg = str(e)
                if "lock" in msg.lower() or "resource temporarily unavailable" in msg.lower():
                    raise IndexLocked(
                        f"index at {self.root} is open in another process (Qdrant Edge allows one process per "
                        f"store; stop the other saedex process or use a Qdrant server with --qdrant-url): {msg}"
                    ) from None
                raise StoreError(f"cannot open {path}: {msg}") from None
        return self._shards[name]

    def exists(self) -> bool:
        return self.manifest_path.exists() and (self.root / DOCS).exists()

    def cache_file(self, filename: str) -> Path:
        return self.root / filename

    def create(self, dense_dim: int, label_dim: int) -> None:
        from qdrant_edge import (
            Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParams, HnswIndexConfig,
            PayloadSchemaType, UpdateOperation,
        )

        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / DOCS).exists():
            cfg = EdgeConfig(
                vectors={"dense": EdgeVectorParams(size=dense_dim, distance=Distance.Cosine)},
                sparse_vectors={"sae": EdgeSparseVectorParams()},
                on_disk_payload=True,
            )
            shard = EdgeShard.create(str(self.root / DOCS), cfg)
            for key in ("doc_id", "dataset"):
                shard.update(UpdateOperation.create_field_index(key, PayloadSchemaType.Keyword))
            self._shards[DOCS] = shard
        if not (self.root / LATENTS).exists():
            # Exact search only for label vectors: HNSW (m=0 disables it) missed most true
            # neighbours on this kind of data, and there are only thousands of latents.
            lcfg = EdgeConfig(
                vectors={
                    "label": EdgeVectorParams(size=label_dim, distance=Distance.Cosine, hnsw_config=HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000)),
                    "snippets": EdgeVectorParams(size=label_dim, distance=Distance.Cosine, hnsw_config=HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000)),
                },
            )
            self._shards[LATENTS] = EdgeShard.create(str(self.root / LATENTS), lcfg)

    def read_manifest(self) -> dict | None:
        return json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else None

    def write_manifest(self, manifest: dict) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._stamp(manifest), indent=2))
        tmp.replace(self.manifest_path)

    def manifest_token(self) -> str | None:
        import os

        try:  # written by rename: a new inode every time (one stat, no read)
            st = os.stat(self.manifest_path)
        except FileNotFoundError:
            return None
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    def upsert_docs(self, points: list[DocPoint]) -> None:
        from qdrant_edge import Point, SparseVector, UpdateOperation

        pts = [
            Point(
                id=point_id(p.doc_id),
                vector={"sae": SparseVector(indices=p.sparse_indices, values=p.sparse_values), "dense": p.dense},
                payload={**p.payload, "doc_id": p.doc_id},
            )
            for p in points
        ]
        self._open(DOCS).update(UpdateOperation.upsert_points(pts))

    def existing_doc_hashes(self, doc_ids: list[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for s in range(0, len(doc_ids), 512):
            recs = self._open(DOCS).retrieve([point_id(d) for d in doc_ids[s : s + 512]], ["doc_id", "content_hash"], False)
            found.update((r.payload["doc_id"], r.payload.get("content_hash")) for r in recs)
        return found

    def lock(self) -> None:
        """One writer per index: an OS lock on ``.writer.lock`` plus Qdrant Edge's own shard locks
        (held by any process with the index open, e.g. a server): both must be free."""
        import fcntl
        import os

        if self._lock_fd is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".writer.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise IndexLocked(f"index {self.root.name!r} is being written by another process; wait for it to finish") from None
        self._lock_fd = fd
        try:
            for name in (DOCS, LATENTS):
                if (self.root / name).exists():
                    self._open(name)
        except IndexLocked:
            self.close()  # hold nothing while refusing
            raise

    def _unlock(self) -> None:
        import os

        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def count(self, flt: Filter | None = None) -> int:
        from qdrant_edge import CountRequest

        return int(self._open(DOCS).count(CountRequest(exact=True, filter=_edge_filter(flt))))

    def _hits(self, recs, with_sparse: bool) -> list[Hit]:
        return [
            Hit(doc_id=r.payload.get("doc_id", str(r.id)), score=float(getattr(r, "score", 0.0) or 0.0),
                payload=dict(r.payload or {}), sparse=_sparse_of(r.vector) if with_sparse else None)
            for r in recs
        ]

    def get_docs(self, doc_ids: list[str], with_sparse: bool = False) -> list[Hit]:
        recs = self._open(DOCS).retrieve([point_id(d) for d in doc_ids], True, ["sae"] if with_sparse else False)
        by_id = {r.payload["doc_id"]: r for r in recs}
        return self._hits([by_id[d] for d in doc_ids if d in by_id], with_sparse)

    def scroll_docs(self, flt=None, with_sparse=True, with_dense=False, payload_fields=None, batch=1000):
        from qdrant_edge import ScrollRequest

        vecs = [v for v, on in (("sae", with_sparse), ("dense", with_dense)) if on] or False
        offset = None
        shard = self._open(DOCS)
        while True:
            recs, offset = shard.scroll(ScrollRequest(
                offset=offset, limit=batch, filter=_edge_filter(flt),
                with_payload=payload_fields if payload_fields is not None else True, with_vector=vecs,
            ))
            hits = self._hits(recs, with_sparse)
            if with_dense:
                for h, r in zip(hits, recs):
                    h.payload["_dense"] = list(r.vector["dense"])
            if hits:
                yield hits
            if offset is None:
                return

    def _query(self, query, using, limit, flt, prefetches=None, with_sparse=False) -> list[Hit]:
        from qdrant_edge import QueryRequest

        req = QueryRequest(limit=limit, query=query, prefetches=prefetches, with_payload=True,
                           with_vector=["sae"] if with_sparse else False, filter=None if prefetches else _edge_filter(flt))
        return self._hits(self._open(DOCS).query(req), with_sparse)

    def search_sparse(self, indices, values, limit, flt=None, with_sparse=False):
        from qdrant_edge import Query, SparseVector

        return self._query(Query.Nearest(SparseVector(indices=indices, values=values), using="sae"), "sae", limit, flt,
                           with_sparse=with_sparse)

    def search_dense(self, vector, limit, flt=None, with_sparse=False):
        from qdrant_edge import Query

        return self._query(Query.Nearest(list(vector), using="dense"), "dense", limit, flt, with_sparse=with_sparse)

    def search_hybrid(self, indices, values, vector, limit, flt=None, rrf_k=60, prefetch=200, with_sparse=False):
        from qdrant_edge import Fusion, Prefetch, Query, SparseVector

        f = _edge_filter(flt)
        pre = [
            Prefetch(limit=prefetch, query=Query.Nearest(SparseVector(indices=indices, values=values), using="sae"), filter=f),
            Prefetch(limit=prefetch, query=Query.Nearest(list(vector), using="dense"), filter=f),
        ]
        return self._query(Fusion.Rrf(k=rrf_k), None, limit, flt, prefetches=pre, with_sparse=with_sparse)

    def upsert_latents(self, points: list[LatentPoint]) -> None:
        from qdrant_edge import Point, UpdateOperation

        pts = [Point(id=p.latent, vector={"label": p.label_vec, "snippets": p.snippet_vec}, payload={**p.payload, "latent": p.latent})
               for p in points]
        for s in range(0, len(pts), 1000):
            self._open(LATENTS).update(UpdateOperation.upsert_points(pts[s : s + 1000]))

    def get_latents(self, ids=None, with_vectors=False, payload_fields=None):
        from qdrant_edge import ScrollRequest

        shard = self._open(LATENTS)
        pl = list(payload_fields) if payload_fields is not None else True
        if ids is not None:
            recs = shard.retrieve([int(i) for i in ids], pl, with_vectors)
        else:
            recs, offset = [], None
            while True:
                page, offset = shard.scroll(ScrollRequest(offset=offset, limit=500, with_payload=pl, with_vector=with_vectors))
                recs.extend(page)
                if offset is None:
                    break
        out = []
        for r in recs:
            v = r.vector or {}
            out.append(LatentPoint(latent=int(r.id), label_vec=list(v.get("label", [])) if v else [],
                                   snippet_vec=list(v.get("snippets", [])) if v else [], payload=dict(r.payload or {})))
        return sorted(out, key=lambda p: p.latent) if ids is None else out

    def search_latents(self, vector, using, limit):
        from qdrant_edge import Query, QueryRequest, SearchParams

        res = self._open(LATENTS).query(QueryRequest(
            limit=limit, query=Query.Nearest(list(vector), using=using), with_payload=False, params=SearchParams(exact=True)))
        return [(int(r.id), float(r.score)) for r in res]

    def flush(self) -> None:
        for s in self._shards.values():
            s.flush()

    def close(self) -> None:
        for s in self._shards.values():
            try:
                s.flush()
                s.close()
            except Exception:  # noqa: BLE001 - closing twice is harmless
                pass
        self._shards.clear()
        self._unlock()

    def drop(self) -> None:
        """Delete the index, but only once this process holds it: never under a running indexer or server."""
        import shutil

        if not self.root.exists():
            return
        try:
            self.lock()  # raises IndexLocked while another process has the index open
        except IndexLocked:
            raise
        except StoreError:
            pass  # a broken shard must not make an index undeletable; we hold the writer's lock
        # Rename first (atomic): from here on no other process can find the index half-deleted.
        doomed = self.root.with_name(f".{self.root.name}.dropping-{uuid.uuid4().hex[:8]}")
        self.root.rename(doomed)
        self.close()
        shutil.rmtree(doomed, ignore_errors=True)


# --------------------------------------------------------------------------- Qdrant server


def _client_filter(flt: Filter | None):
    from qdrant_client import models as m

    return _build_filter(flt, m.Filter, m.FieldCondition, m.MatchAny, m.MatchValue, m.Range)


class ServerStore(Store):
    """A Qdrant server or cluster via qdrant-client. Collections ``NAME__docs``/``NAME__latents``/``NAME__meta``.

    ``url=":memory:"`` uses qdrant-client's local mode: only for tests of this code path.
    """

    def __init__(self, url: str, name: str, api_key: str | None = None, shards: int = 1, replicas: int = 1):
        from qdrant_client import QdrantClient

        self.client = QdrantClient(location=url) if url == ":memory:" else QdrantClient(url=url, api_key=api_key, timeout=60)
        self.name = name
        self.shards, self.replicas = shards, replicas

    def _c(self, kind: str) -> str:
        return f"{self.name}__{kind}"

    def cache_file(self, filename: str) -> Path:
        from indexer.paths import saedex_home

        d = saedex_home() / "cache"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{self.name}.{filename}"

    def exists(self) -> bool:
        return self.client.collection_exists(self._c("meta")) and self.client.collection_exists(self._c(DOCS))

    def create(self, dense_dim: int, label_dim: int) -> None:
        from qdrant_client import models as m

        if not self.client.collection_exists(self._c(DOCS)):
            self.client.create_collection(
                self._c(DOCS),
                vectors_config={"dense": m.VectorParams(size=dense_dim, distance=m.Distance.COSINE)},
                sparse_vectors_config={"sae": m.SparseVectorParams()},
                shard_number=self.shards, replication_factor=self.replicas, on_disk_payload=True,
            )
            for key in ("doc_id", "dataset"):
                self.client.create_payload_index(self._c(DOCS), key, m.PayloadSchemaType.KEYWORD)
        if not self.client.collection_exists(self._c(LATENTS)):
            self.client.create_collection(self._c(LATENTS), vectors_config={
                "label": m.VectorParams(size=label_dim, distance=m.Distance.COSINE),
                "snippets": m.VectorParams(size=label_dim, distance=m.Distance.COSINE),
            })
        if not self.client.collection_exists(self._c("meta")):
            self.client.create_collection(self._c("meta"), vectors_config={})

    def read_manifest(self) -> dict | None:
        if not self.client.collection_exists(self._c("meta")):
            return None
        recs = self.client.retrieve(self._c("meta"), [0], with_payload=True)
        return json.loads(recs[0].payload["manifest"]) if recs else None

    def write_manifest(self, manifest: dict) -> None:
        from qdrant_client import models as m

        self.client.upsert(self._c("meta"), [m.PointStruct(id=0, vector={}, payload={"manifest": json.dumps(self._stamp(manifest))})])

    def manifest_token(self) -> str | None:
        manifest = self.read_manifest()
        return None if manifest is None else f"{manifest.get('generation')}:{manifest.get('revision')}"

    def upsert_docs(self, points: list[DocPoint]) -> None:
        from qdrant_client import models as m

        self.client.upsert(self._c(DOCS), [
            m.PointStruct(id=point_id(p.doc_id), payload={**p.payload, "doc_id": p.doc_id},
                          vector={"sae": m.SparseVector(indices=p.sparse_indices, values=p.sparse_values), "dense": p.dense})
            for p in points
        ], wait=True)

    def existing_doc_hashes(self, doc_ids: list[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for s in range(0, len(doc_ids), 512):
            recs = self.client.retrieve(self._c(DOCS), [point_id(d) for d in doc_ids[s : s + 512]],
                                        with_payload=["doc_id", "content_hash"])
            found.update((r.payload["doc_id"], r.payload.get("content_hash")) for r in recs)
        return found

    def count(self, flt=None) -> int:
        return int(self.client.count(self._c(DOCS), count_filter=_client_filter(flt), exact=True).count)

    def _hits(self, recs, with_sparse):
        return [Hit(doc_id=r.payload.get("doc_id", str(r.id)), score=float(getattr(r, "score", 0.0) or 0.0),
                    payload=dict(r.payload or {}), sparse=_sparse_of(r.vector) if with_sparse else None) for r in recs]

    def get_docs(self, doc_ids, with_sparse=False):
        recs = self.client.retrieve(self._c(DOCS), [point_id(d) for d in doc_ids], with_payload=True,
                                    with_vectors=["sae"] if with_sparse else False)
        by_id = {r.payload["doc_id"]: r for r in recs}
        return self._hits([by_id[d] for d in doc_ids if d in by_id], with_sparse)

    def scroll_docs(self, flt=None, with_sparse=True, with_dense=False, payload_fields=None, batch=1000):
        vecs = [v for v, on in (("sae", with_sparse), ("dense", with_dense)) if on] or False
        offset = None
        while True:
            recs, offset = self.client.scroll(self._c(DOCS), scroll_filter=_client_filter(flt), limit=batch, offset=offset,
                                              with_payload=payload_fields if payload_fields is not None else True, with_vectors=vecs)
            hits = self._hits(recs, with_sparse)
            if with_dense:
                for h, r in zip(hits, recs):
                    h.payload["_dense"] = list(r.vector["dense"])
            if hits:
                yield hits
            if offset is None:
                return

    def search_sparse(self, indices, values, limit, flt=None, with_sparse=False):
        from qdrant_client import models as m

        res = self.client.query_points(self._c(DOCS), query=m.SparseVector(indices=indices, values=values), using="sae",
                                       limit=limit, query_filter=_client_filter(flt), with_payload=True,
                                       with_vectors=["sae"] if with_sparse else False)
        return self._hits(res.points, with_sparse)

    def search_dense(self, vector, limit, flt=None, with_sparse=False):
        res = self.client.query_points(self._c(DOCS), query=list(vector), using="dense", limit=limit,
                                       query_filter=_client_filter(flt), with_payload=True,
                                       with_vectors=["sae"] if with_sparse else False)
        return self._hits(res.points, with_sparse)

    def search_hybrid(self, indices, values, vector, limit, flt=None, rrf_k=60, prefetch=200, with_sparse=False):
        from qdrant_client import models as m

        f = _client_filter(flt)
        res = self.client.query_points(
            self._c(DOCS),
            prefetch=[m.Prefetch(query=m.SparseVector(indices=indices, values=values), using="sae", limit=prefetch, filter=f),
                      m.Prefetch(query=list(vector), using="dense", limit=prefetch, filter=f)],
            query=m.RrfQuery(rrf=m.Rrf(k=rrf_k)), limit=limit, with_payload=True,
            with_vectors=["sae"] if with_sparse else False,
        )
        return self._hits(res.points, with_sparse)

    def upsert_latents(self, points):
        from qdrant_client import models as m

        for s in range(0, len(points), 1000):
            self.client.upsert(self._c(LATENTS), [
                m.PointStruct(id=p.latent, vector={"label": p.label_vec, "snippets": p.snippet_vec}, payload={**p.payload, "latent": p.latent})
                for p in points[s : s + 1000]
            ], wait=True)

    def get_latents(self, ids=None, with_vectors=False, payload_fields=None):
        pl = list(payload_fields) if payload_fields is not None else True
        if ids is not None:
            recs = self.client.retrieve(self._c(LATENTS), [int(i) for i in ids], with_payload=pl, with_vectors=with_vectors)
        else:
            recs, offset = [], None
            while True:
                page, offset = self.client.scroll(self._c(LATENTS), limit=500, offset=offset, with_payload=pl, with_vectors=with_vectors)
                recs.extend(page)
                if offset is None:
                    break
        out = [LatentPoint(latent=int(r.id), label_vec=list((r.vector or {}).get("label", [])),
                           snippet_vec=list((r.vector or {}).get("snippets", [])), payload=dict(r.payload or {})) for r in recs]
        return sorted(out, key=lambda p: p.latent) if ids is None else out

    def search_latents(self, vector, using, limit):
        from qdrant_client import models as m

        res = self.client.query_points(self._c(LATENTS), query=list(vector), using=using, limit=limit,
                                       search_params=m.SearchParams(exact=True), with_payload=False)
        return [(int(r.id), float(r.score)) for r in res.points]

    def drop(self) -> None:
        import shutil

        shutil.rmtree(self.cache_file("columns"), ignore_errors=True)  # the local columnar copy
        for kind in (DOCS, LATENTS, "meta"):
            if self.client.collection_exists(self._c(kind)):
                self.client.delete_collection(self._c(kind))

    def close(self) -> None:
        self.client.close()


def open_store(name: str, qdrant_url: str | None = None) -> Store:
    """The store for index ``name``: Qdrant Edge under ``$SAEDEX_HOME`` unless a URL is given."""
    from indexer.paths import index_dir, validate_index_name

    validate_index_name(name)
    if qdrant_url:
        return ServerStore(qdrant_url, name)
    return EdgeStore(index_dir(name))


def list_indexes(qdrant_url: str | None = None) -> list[str]:
    from indexer.paths import saedex_home

    if qdrant_url:
        from qdrant_client import QdrantClient

        client = QdrantClient(location=qdrant_url) if qdrant_url == ":memory:" else QdrantClient(url=qdrant_url)
        names = {c.name.rsplit("__", 1)[0] for c in client.get_collections().collections if c.name.endswith("__meta")}
        return sorted(names)
    root = saedex_home() / "indexes"
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and (p / "manifest.json").exists()) if root.exists() else []
