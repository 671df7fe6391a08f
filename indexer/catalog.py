"""Read-side helpers over an index: info, latent listing, latent lookup by text.

These are what `saedex info/latents`, search and the server share.
"""

from __future__ import annotations

import numpy as np

from indexer.embedder import get_embedder
from indexer.manifest import check_version
from indexer.store import Filter, IndexNotFound, LatentPoint, Store


class LatentStatsStale(ValueError):
    """Latent statistics do not cover the index's documents (exit 2 / HTTP 409)."""


def require_index(store: Store, name: str) -> dict:
    manifest = store.read_manifest()
    if manifest is None:
        raise IndexNotFound(f"no index named {name!r} (create it with `saedex index PATH --index {name}`)")
    check_version(manifest, name)
    return manifest


def latent_stats_state(store: Store, manifest: dict) -> dict:
    """Whether latent statistics (labels, p90, examples) cover every document.

    An ingest killed after its last write but before the refresh leaves them stale; search
    then refuses with a hint instead of silently ranking with missing latents.
    """
    docs = store.count()
    covered = int(manifest.get("latent_stats_docs") or 0)
    return {"documents": docs, "documents_covered": covered, "stale": covered != docs}


def require_fresh_latent_stats(store: Store, name: str, manifest: dict) -> None:
    state = latent_stats_state(store, manifest)
    if state["stale"] and state["documents"]:
        raise LatentStatsStale(
            f"latent statistics of index {name!r} cover {state['documents_covered']} of {state['documents']} documents "
            f"(an ingest stopped before refreshing them); run `saedex label --index {name}`")


def index_info(store: Store, name: str) -> dict:
    manifest = require_index(store, name)
    datasets = {d: store.count(Filter({"dataset": d})) for d in manifest.get("datasets", [])}
    return {
        "index": name,
        "documents": store.count(),
        "datasets": datasets,
        "reader": manifest.get("reader", {}),
        "sae": manifest.get("sae", {}),
        "embedder": manifest.get("embedder"),
        "pooling": manifest.get("pooling"),
        "inference": manifest.get("inference", {}),
        "latent_stats": latent_stats_state(store, manifest),
    }


def add_dataset(store: Store, dataset: str) -> None:
    manifest = store.read_manifest() or {}
    names = manifest.setdefault("datasets", [])
    if dataset not in names:
        names.append(dataset)
        store.write_manifest(manifest)


def latent_summary(p: LatentPoint, n_examples: int = 3) -> dict:
    pl = p.payload
    return {
        "id": p.latent,
        "label": pl.get("label", ""),
        "description": pl.get("description", ""),
        # concept | lexical, and how well the label detects the latent on held-out contexts
        # (AUC in [0, 1]; null for offline labels of latents the SAE's dictionary lacks)
        "kind": pl.get("kind", "lexical"),
        "quality": pl.get("quality"),
        "label_source": pl.get("label_source", "offline"),
        "doc_freq": float(pl.get("doc_freq", 0.0)),
        "doc_count": int(pl.get("doc_count", 0)),
        "quantiles": pl.get("quantiles", {}),
        "examples": pl.get("examples", [])[:n_examples],
    }


def top_latents_by_freq(store: Store, top: int) -> list[LatentPoint]:
    pts = [p for p in store.get_latents() if p.payload.get("doc_count", 0) > 0]
    pts.sort(key=lambda p: -p.payload.get("doc_freq", 0.0))
    return pts[:top]


DIRECTION_WEIGHT = 0.0  # measured on the dev queries: directions lowered SAE MAP (0.336 at 0, 0.304 at 0.5; README)
QUALITY_WEIGHT = 0.5  # 0.3358 vs 0.3327 without quality weighting (dev queries)


def latents_for_query(store: Store, query: str, top: int, label_weight: float = 0.5,
                      direction_weight: float = DIRECTION_WEIGHT, quality_weight: float = QUALITY_WEIGHT) -> list[tuple[int, float]]:
    """Latents ranked by what they are called, what they fire on here, and what they do.

    - name: cos(query, label vector) (the dictionary's concept text where the SAE ships one);
    - evidence: cos(query, mean of this index's firing snippets);
    - direction: cos(query, the latent's contrastive direction from the SAE's dictionary - its
      activating contexts minus non-activating ones, so what every text shares cancels out).

    score = (1 - dw) * (lw * name + (1 - lw) * evidence) + dw * direction, times
    (1 - qw) + qw * quality, so a latent whose label detects it poorly counts less. Label and
    snippet lookups are exact searches over the latents collection; directions are one matmul.
    """
    from indexer.dictionary import dictionary_for

    q = get_embedder().encode([query])[0]
    pool = max(top * 4, 200)
    a = dict(store.search_latents(q.tolist(), "label", pool))
    b = dict(store.search_latents(q.tolist(), "snippets", pool))
    d = dictionary_for(store.read_manifest() or {}) if direction_weight > 0 else None
    c: dict[int, float] = {}
    if d is not None:
        sims = d.directions @ q
        idx = np.argpartition(-sims, min(pool, len(sims) - 1))[:pool]
        c = {int(i): float(sims[i]) for i in idx}
    else:
        direction_weight = 0.0
    keys = set(a) | set(b) | set(c)
    present = {p.latent: p for p in store.get_latents(sorted(keys))} if c or quality_weight > 0 else {k: None for k in keys}
    floor_a = min(a.values()) if a else 0.0
    floor_b = min(b.values()) if b else 0.0
    floor_c = min(c.values()) if c else 0.0
    scored = []
    for k in keys:
        if k not in present:  # a direction for a latent that never fires in this index
            continue
        s = (1 - direction_weight) * (label_weight * a.get(k, floor_a) + (1 - label_weight) * b.get(k, floor_b))
        s += direction_weight * c.get(k, floor_c)
        p = present[k]
        qual = p.payload.get("quality") if p is not None else None
        s *= (1 - quality_weight) + quality_weight * (0.5 if qual is None else float(qual))
        scored.append((k, s))
    scored.sort(key=lambda t: (-t[1], t[0]))
    return scored[:top]


def cosine_matrix(vectors: list[list[float]]) -> np.ndarray:
    m = np.asarray(vectors, dtype=np.float32)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    m = m / np.maximum(n, 1e-8)
    return m @ m.T
