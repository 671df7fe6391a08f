"""Qdrant Edge (``qdrant-edge-py``): Qdrant's engine in-process, the default backend.

One shard directory per collection under ``$SAEDEX_HOME/indexes/NAME``, the manifest a JSON
file beside them. 1 ms sparse search at 200k docs, where qdrant-client's pure-Python local
mode takes hundreds. Qdrant Edge allows one process per shard (a WAL lock); writers also take
``.writer.lock`` so two indexers never interleave.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from indexer.store.base import DOCS, LATENTS, AllBut, Filter, IndexLocked, Nearest, Payload, Store, StoreError, build_filter
from indexer.store.schema import VECTOR_OF


def _filter(flt: Filter | None):
    import numpy as np
    import qdrant_edge as q

    return build_filter(flt, (q.Filter, q.FieldCondition, q.MatchAny, q.MatchValue, q.RangeFloat), as_bool=np.bool_)


def _payload(p: Payload):
    import qdrant_edge as q

    return q.PayloadSelector.Exclude(list(p.keys)) if isinstance(p, AllBut) else p


class EdgeStore(Store):
    """Qdrant Edge shards in a local folder. One process per index at a time (WAL lock)."""

    def __init__(self, root: Path, name: str | None = None):
        super().__init__(name or Path(root).name)
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self._shards: dict[str, Any] = {}
        self._lock_fd: int | None = None

    def _open(self, kind: str):
        if kind not in self._shards:
            from qdrant_edge import EdgeShard

            path = self.root / kind
            if not path.exists():
                raise StoreError(f"index at {self.root} has no {kind} collection (was it created?)")
            try:
                self._shards[kind] = EdgeShard.load(str(path))
            except Exception as e:  # noqa: BLE001
                msg = str(e)
                if "lock" in msg.lower() or "resource temporarily unavailable" in msg.lower():
                    raise IndexLocked(
                        f"index at {self.root} is open in another process (Qdrant Edge allows one process per "
                        f"store; stop the other saedex process or use a Qdrant server with --qdrant-url): {msg}"
                    ) from None
                raise StoreError(f"cannot open {path}: {msg}") from None
        return self._shards[kind]

    # ------------------------------------------------------------ primitives
    def _retrieve(self, kind, ids, payload, vectors):
        return self._open(kind).retrieve(ids, _payload(payload), vectors)

    def _scroll(self, kind, flt, limit, offset, payload, vectors):
        from qdrant_edge import ScrollRequest

        return self._open(kind).scroll(ScrollRequest(offset=offset, limit=limit, filter=self._docs_filter(kind, flt), with_payload=_payload(payload),
                                                     with_vector=vectors))

    def _query(self, q: Nearest, limit, flt, with_sparse, payload=True):
        from qdrant_edge import Fusion, Prefetch, Query, QueryRequest, SparseVector

        f = self._docs_filter(DOCS, flt)
        sparse = Query.Nearest(SparseVector(indices=q.sparse[0], values=q.sparse[1]), using=q.using) if q.sparse else None
        dense = Query.Nearest(list(q.dense), using="dense") if q.dense is not None else None
        vectors = [q.using] if with_sparse else False
        payload = _payload(payload)
        if sparse is not None and dense is not None:
            req = QueryRequest(limit=limit, query=Fusion.Dbsf() if q.fusion == "dbsf" else Fusion.Rrf(k=q.rrf_k, weights=[q.sparse_weight, 1.0]), with_payload=payload, with_vector=vectors,
                               prefetches=[Prefetch(limit=q.prefetch, query=sparse, filter=f),
                                           Prefetch(limit=q.prefetch, query=dense, filter=f)])
        else:
            req = QueryRequest(limit=limit, query=sparse or dense, with_payload=payload, with_vector=vectors, filter=f)
        return self._open(DOCS).query(req)

    def _upsert(self, kind, points):
        from qdrant_edge import Point, SparseVector, UpdateOperation

        pts = [Point(id=pid, payload=payload, vector={name: SparseVector(indices=v[0], values=v[1]) if isinstance(v, tuple) else v
                                                       for name, v in vectors.items()})
               for pid, vectors, payload in points]
        self._open(kind).update(UpdateOperation.upsert_points(pts))

    def count(self, flt: Filter | None = None) -> int:
        from qdrant_edge import CountRequest

        return int(self._open(DOCS).count(CountRequest(exact=True, filter=self._docs_filter(DOCS, flt))))

    def _docs_filter(self, kind: str, flt: Filter | None):
        self._index_float_fields(kind, flt)
        return _filter(flt)

    def _create_float_index(self, key: str) -> None:
        from qdrant_edge import PayloadSchemaType, UpdateOperation

        self._open(DOCS).update(UpdateOperation.create_field_index(key, PayloadSchemaType.Float))

    # ------------------------------------------------------------ lifecycle
    def exists(self) -> bool:
        return self.manifest_path.exists() and (self.root / DOCS).exists()

    def cache_file(self, filename: str) -> Path:
        return self.root / filename

    def create(self, dense_dim: int, label_dim: int) -> None:
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeShard,
            EdgeSparseVectorParams,
            EdgeVectorParams,
            HnswIndexConfig,
            PayloadSchemaType,
            UpdateOperation,
        )

        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / DOCS).exists():
            cfg = EdgeConfig(
                vectors={"dense": EdgeVectorParams(size=dense_dim, distance=Distance.Cosine)},
                sparse_vectors={name: EdgeSparseVectorParams() for name in VECTOR_OF.values()},
                on_disk_payload=True,
            )
            shard = EdgeShard.create(str(self.root / DOCS), cfg)
            for key in ("doc_id", "dataset"):
                shard.update(UpdateOperation.create_field_index(key, PayloadSchemaType.Keyword))
            self._shards[DOCS] = shard
        if not (self.root / LATENTS).exists():
            # Exact search only for label vectors (m=0 disables HNSW): there are only thousands of latents.
            exact = HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000)
            lcfg = EdgeConfig(vectors={
                "label": EdgeVectorParams(size=label_dim, distance=Distance.Cosine, hnsw_config=exact),
                "snippets": EdgeVectorParams(size=label_dim, distance=Distance.Cosine, hnsw_config=exact),
            })
            self._shards[LATENTS] = EdgeShard.create(str(self.root / LATENTS), lcfg)

    def read_manifest(self) -> dict | None:
        import json

        return json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else None

    def _write_manifest(self, text: str) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.manifest_path)

    def manifest_token(self) -> str | None:
        try:  # written by rename: a new inode every time (one stat, no read)
            st = os.stat(self.manifest_path)
        except FileNotFoundError:
            return None
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    def lock(self) -> None:
        """One writer per index: an OS lock on ``.writer.lock`` plus Qdrant Edge's own shard locks
        (held by any process with the index open, e.g. a server): both must be free."""
        import fcntl

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
            for kind in (DOCS, LATENTS):
                if (self.root / kind).exists():
                    self._open(kind)
        except IndexLocked:
            self.close()  # hold nothing while refusing
            raise

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

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
