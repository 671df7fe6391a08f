"""A Qdrant server or cluster through ``qdrant-client`` (``--qdrant-url``).

Collections ``NAME__docs``/``NAME__latents``/``NAME__meta`` (the manifest is point 0 of
``meta``). ``url=":memory:"`` is qdrant-client's in-process mode: a pure-Python brute force,
only for tests of this code path.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from indexer.core.paths import saedex_home
from indexer.core.settings import settings
from indexer.store.base import DOCS, LATENTS, AllBut, Filter, Nearest, Payload, Store, build_filter
from indexer.store.schema import VECTOR_OF

META = "meta"


def _filter(flt: Filter | None):
    from qdrant_client import models as m

    return build_filter(flt, (m.Filter, m.FieldCondition, m.MatchAny, m.MatchValue, m.Range))


def _payload(p: Payload):
    from qdrant_client import models as m

    return m.PayloadSelectorExclude(exclude=list(p.keys)) if isinstance(p, AllBut) else p


def client_for(url: str, api_key: str | None = None):
    """A client of the Qdrant at ``url``, sending ``api_key`` (default ``SAEDEX_QDRANT_API_KEY``):
    a Qdrant reachable by others must demand a key, or anyone who reaches it bypasses saedex's
    own keys (docker-compose.yml sets one on both sides)."""
    from qdrant_client import QdrantClient

    if url == ":memory:":
        return QdrantClient(location=url)
    key = api_key if api_key is not None else settings().qdrant_api_key
    with warnings.catch_warnings():  # "Api key is used with an insecure connection": compose's private network
        warnings.simplefilter("ignore", UserWarning)
        return QdrantClient(url=url, api_key=key, timeout=60)


class ServerStore(Store):
    """One index in a Qdrant server or cluster."""

    def __init__(self, url: str, name: str, api_key: str | None = None, shards: int = 1, replicas: int = 1):
        super().__init__(name)
        self.client = client_for(url, api_key)
        self.shards, self.replicas = shards, replicas

    def _c(self, kind: str) -> str:
        return f"{self.name}__{kind}"

    # ------------------------------------------------------------ primitives
    def _retrieve(self, kind, ids, payload, vectors):
        return self.client.retrieve(self._c(kind), ids, with_payload=_payload(payload), with_vectors=vectors)

    def _scroll(self, kind, flt, limit, offset, payload, vectors):
        return self.client.scroll(self._c(kind), scroll_filter=self._docs_filter(kind, flt), limit=limit, offset=offset,
                                  with_payload=_payload(payload), with_vectors=vectors)

    def _query(self, q: Nearest, limit, flt, with_sparse, payload=True):
        from qdrant_client import models as m

        f = self._docs_filter(DOCS, flt)
        vectors = [q.using] if with_sparse else False
        payload = _payload(payload)
        sparse = m.SparseVector(indices=q.sparse[0], values=q.sparse[1]) if q.sparse else None
        if sparse is not None and q.dense is not None:
            res = self.client.query_points(
                self._c(DOCS), prefetch=[m.Prefetch(query=sparse, using=q.using, limit=q.prefetch, filter=f),
                                         m.Prefetch(query=list(q.dense), using="dense", limit=q.prefetch, filter=f)],
                query=(m.FusionQuery(fusion=m.Fusion.DBSF) if q.fusion == "dbsf"
                       else m.RrfQuery(rrf=m.Rrf(k=q.rrf_k, weights=[q.sparse_weight, 1.0]))), limit=limit, with_payload=payload, with_vectors=vectors)
        else:
            res = self.client.query_points(self._c(DOCS), query=sparse if sparse is not None else list(q.dense),
                                           using=q.using if sparse is not None else "dense", limit=limit, query_filter=f,
                                           with_payload=payload, with_vectors=vectors)
        return res.points

    def _upsert(self, kind, points):
        from qdrant_client import models as m

        self.client.upsert(self._c(kind), [
            m.PointStruct(id=pid, payload=payload, vector={
                name: m.SparseVector(indices=v[0], values=v[1]) if isinstance(v, tuple) else v for name, v in vectors.items()})
            for pid, vectors, payload in points], wait=True)

    def count(self, flt: Filter | None = None) -> int:
        return int(self.client.count(self._c(DOCS), count_filter=self._docs_filter(DOCS, flt), exact=True).count)

    def _docs_filter(self, kind: str, flt: Filter | None):
        self._index_float_fields(kind, flt)
        return _filter(flt)

    def _create_float_index(self, key: str) -> None:
        from qdrant_client import models as m

        with warnings.catch_warnings():  # the in-process mode has no payload indexes (and says so)
            warnings.simplefilter("ignore", UserWarning)
            self.client.create_payload_index(self._c(DOCS), key, m.PayloadSchemaType.FLOAT)

    # ------------------------------------------------------------ lifecycle
    def cache_file(self, filename: str) -> Path:
        d = saedex_home() / "cache"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{self.name}.{filename}"

    def exists(self) -> bool:
        return self.client.collection_exists(self._c(META)) and self.client.collection_exists(self._c(DOCS))

    def create(self, dense_dim: int, label_dim: int) -> None:
        from qdrant_client import models as m

        if not self.client.collection_exists(self._c(DOCS)):
            self.client.create_collection(
                self._c(DOCS),
                vectors_config={"dense": m.VectorParams(size=dense_dim, distance=m.Distance.COSINE)},
                sparse_vectors_config={name: m.SparseVectorParams() for name in VECTOR_OF.values()},
                shard_number=self.shards, replication_factor=self.replicas, on_disk_payload=True,
            )
            for key in ("doc_id", "dataset"):
                self.client.create_payload_index(self._c(DOCS), key, m.PayloadSchemaType.KEYWORD)
        if not self.client.collection_exists(self._c(LATENTS)):
            self.client.create_collection(self._c(LATENTS), vectors_config={
                "label": m.VectorParams(size=label_dim, distance=m.Distance.COSINE),
                "snippets": m.VectorParams(size=label_dim, distance=m.Distance.COSINE),
            })
        if not self.client.collection_exists(self._c(META)):
            self.client.create_collection(self._c(META), vectors_config={})

    def read_manifest(self) -> dict | None:
        if not self.client.collection_exists(self._c(META)):
            return None
        recs = self.client.retrieve(self._c(META), [0], with_payload=True)
        return json.loads(recs[0].payload["manifest"]) if recs else None

    def _write_manifest(self, text: str) -> None:
        from qdrant_client import models as m

        self.client.upsert(self._c(META), [m.PointStruct(id=0, vector={}, payload={"manifest": text})])

    def manifest_token(self) -> str | None:
        manifest = self.read_manifest()
        return None if manifest is None else f"{manifest.get('generation')}:{manifest.get('revision')}"

    def drop(self) -> None:
        shutil.rmtree(self.cache_file("columns"), ignore_errors=True)  # the local columnar copy
        for kind in (DOCS, LATENTS, META):
            if self.client.collection_exists(self._c(kind)):
                self.client.delete_collection(self._c(kind))

    def close(self) -> None:
        self.client.close()


def list_server_indexes(url: str) -> list[str]:
    client = client_for(url)
    try:
        return sorted({c.name.rsplit("__", 1)[0] for c in client.get_collections().collections if c.name.endswith(f"__{META}")})
    finally:
        client.close()
