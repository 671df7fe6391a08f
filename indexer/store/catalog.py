"""Read-side helpers over an index: its manifest, info, freshness of its latent statistics, one latent.

What `saedex info/latent`, search, the analyses and the server share. (Query -> latents is search's:
:mod:`search.latents`.)
"""

from __future__ import annotations

from indexer.core.errors import ConflictError, NotFoundError
from indexer.encode.recipe import Manifest, read_manifest, update_state
from indexer.store import Filter, IndexNotFound, LatentPoint, Store


class LatentStatsStale(ConflictError):
    """Latent statistics do not cover the index's documents (exit 2 / HTTP 409)."""


def require_index(store: Store, name: str) -> Manifest:
    """The index's manifest (recipe and state), or a clear error when there is no index or an older saedex built it."""
    manifest = read_manifest(store, name)
    if manifest is None:
        raise IndexNotFound(f"no index named {name!r} (create it with `saedex index PATH --index {name}`)")
    return manifest


def latent_stats_state(store: Store, manifest: Manifest) -> dict:
    """Whether latent statistics (labels, p90, examples) cover every document.

    An ingest killed after its last write but before the refresh leaves them stale; search
    then refuses with a hint instead of silently ranking with missing latents.
    """
    docs = store.count()
    covered = manifest.state.latent_stats_docs
    return {"documents": docs, "documents_covered": covered, "stale": covered != docs}


def require_fresh_latent_stats(store: Store, name: str, manifest: Manifest) -> None:
    state = latent_stats_state(store, manifest)
    if state["stale"] and state["documents"]:
        raise LatentStatsStale(
            f"latent statistics of index {name!r} cover {state['documents_covered']} of {state['documents']} documents "
            f"(an ingest stopped before refreshing them); run `saedex label --index {name}`")


def index_info(store: Store, name: str) -> dict:
    manifest = require_index(store, name)
    datasets = {d: store.count(Filter({"dataset": d})) for d in manifest.state.datasets}
    recipe = manifest.recipe.to_dict()
    return {
        "index": name,
        "documents": store.count(),
        "datasets": datasets,
        **{k: recipe[k] for k in ("reader", "sae", "concept", "embedder", "pooling", "inference")},
        "latent_stats": latent_stats_state(store, manifest),
    }


def add_dataset(store: Store, dataset: str) -> None:
    update_state(store, add_dataset=dataset)


def latent_summary(p: LatentPoint, n_examples: int = 3) -> dict:
    pl = p.payload
    return {
        "id": p.latent,
        "label": pl.get("label", ""),
        "description": pl.get("description", ""),
        # concept | lexical, and how well the label detects the latent on held-out contexts
        # (AUC in [0, 1]; null for offline labels of latents the SAE's dictionary lacks)
        "kind": pl.get("kind", "lexical"),
        "family": pl.get("family", "token"),  # token | concept (the SAE over sentence embeddings)
        "quality": pl.get("quality"),
        "label_source": pl.get("label_source", "offline"),
        "doc_freq": float(pl.get("doc_freq", 0.0)),
        "doc_count": int(pl.get("doc_count", 0)),
        "quantiles": pl.get("quantiles", {}),
        "examples": pl.get("examples", [])[:n_examples],
    }


def latent_detail(store: Store, index: str, latent: int) -> dict:
    """One latent with 20 examples, its negatives and where its label came from."""
    require_index(store, index)
    pts = store.get_latents([latent])
    if not pts:
        raise NotFoundError(f"no latent {latent} in index {index!r}")
    p = pts[0]
    return latent_summary(p, n_examples=20) | {"negatives": p.payload.get("negatives", []),
                                               "label_source": p.payload.get("label_source", "offline")}


