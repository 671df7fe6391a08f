"""One store interface over two Qdrant backends (see :mod:`indexer.store.base`).

- :class:`EdgeStore` (default): Qdrant Edge, Qdrant's engine in-process, under ``$SAEDEX_HOME``.
- :class:`ServerStore`: a Qdrant server or cluster through qdrant-client (``--qdrant-url``).
"""

from __future__ import annotations

from indexer.core.paths import index_dir, saedex_home, validate_index_name
from indexer.store.base import (
    DOCS,
    LATENTS,
    DocPoint,
    Filter,
    Hit,
    IndexLocked,
    IndexNotFound,
    LatentPoint,
    Store,
    StoreError,
    point_id,
    view_filter,
)
from indexer.store.edge import EdgeStore
from indexer.store.server import ServerStore, list_server_indexes
from indexer.store.sparse import SparseMap


def open_store(name: str, qdrant_url: str | None = None) -> Store:
    """The store for index ``name``: Qdrant Edge under ``$SAEDEX_HOME`` unless a URL is given."""
    validate_index_name(name)
    if qdrant_url:
        return ServerStore(qdrant_url, name)
    return EdgeStore(index_dir(name), name)


def list_indexes(qdrant_url: str | None = None) -> list[str]:
    if qdrant_url:
        return list_server_indexes(qdrant_url)
    root = saedex_home() / "indexes"
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and (p / "manifest.json").exists()) if root.exists() else []


__all__ = ["DOCS", "LATENTS", "DocPoint", "EdgeStore", "Filter", "Hit", "IndexLocked", "IndexNotFound", "LatentPoint",
           "ServerStore", "SparseMap", "Store", "StoreError", "list_indexes", "open_store", "point_id",
           "view_filter"]
