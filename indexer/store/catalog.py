"""Read-side helpers over an index: info, latent listing, latent lookup by text.

These are what `saedex info/latents`, search and the server share.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from pydantic import Field, field_validator

from indexer.core.errors import ConflictError, NotFoundError
from indexer.core.params import Params
from indexer.encode.embedder import get_embedder
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
        **{k: recipe[k] for k in ("reader", "sae", "embedder", "pooling", "inference")},
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
        "quality": pl.get("quality"),
        "label_source": pl.get("label_source", "offline"),
        "doc_freq": float(pl.get("doc_freq", 0.0)),
        "doc_count": int(pl.get("doc_count", 0)),
        "quantiles": pl.get("quantiles", {}),
        "examples": pl.get("examples", [])[:n_examples],
    }


class LatentsParams(Params):
    query: Optional[str] = Field(None, max_length=500, description="Rank latents by similarity of their label/contexts to this text.")
    top: int = Field(20, ge=1, le=20_000, description="Latents to list (the whole dictionary of a 16k SAE fits).")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v


def list_latents(store: Store, index: str, params: LatentsParams, table=None) -> dict:
    """``saedex latents`` and ``GET /v1/indexes/NAME/latents``: the top latents by document
    frequency, or by similarity to ``params.query`` (``table``: the caller's latent table)."""
    require_index(store, index)
    if params.query is None:
        return {"latents": [latent_summary(p) for p in top_latents_by_freq(store, params.top)]}
    ranked = latents_for_query(store, params.query, params.top, table=table)
    pts = {p.latent: p for p in store.get_latents([i for i, _ in ranked])}
    return {"latents": [latent_summary(pts[i]) | {"similarity": round(s, 4)} for i, s in ranked if i in pts]}


def latent_detail(store: Store, index: str, latent: int) -> dict:
    """One latent with 20 examples, its negatives and where its label came from."""
    require_index(store, index)
    pts = store.get_latents([latent])
    if not pts:
        raise NotFoundError(f"no latent {latent} in index {index!r}")
    p = pts[0]
    return latent_summary(p, n_examples=20) | {"negatives": p.payload.get("negatives", []),
                                               "label_source": p.payload.get("label_source", "offline")}


def top_latents_by_freq(store: Store, top: int) -> list[LatentPoint]:
    pts = [p for p in store.get_latents() if p.payload.get("doc_count", 0) > 0]
    pts.sort(key=lambda p: -p.payload.get("doc_freq", 0.0))
    return pts[:top]


DIRECTION_WEIGHT = 0.0  # measured on the dev queries: directions lowered SAE MAP (0.336 at 0, 0.304 at 0.5; README)
QUALITY_WEIGHT = 0.5  # 0.3358 vs 0.3327 without quality weighting (dev queries)
# A latent's similarity to the query minus CENTER x its mean similarity to the taxonomy's 208
# concepts: latents whose contexts resemble every property stop crowding out specific ones.
# Dev MAP (17 queries): 0.3349 at 0, 0.3375 at 0.5, 0.3426 at 1, 0.3461 at 1.5, 0.3434 at 2 (README).
CENTER = 1.5


def rank_weights(n: int, temperature: float) -> np.ndarray:
    """w_r = exp(-(r/n)/T) for ranks r = 0..n-1 (the paper's rank weighting of a query's latents)."""
    r = np.arange(n, dtype=np.float64)
    return np.exp(-(r / max(n, 1)) / temperature)


def latents_for_query(store: Store, query: str | np.ndarray, top: int, label_weight: float = 0.5,
                      direction_weight: float = DIRECTION_WEIGHT, quality_weight: float = QUALITY_WEIGHT,
                      table=None, center: float = CENTER) -> list[tuple[int, float]]:
    """Latents ranked by what they are called, what they fire on here, and what they do.

    - name: cos(query, label vector) (the dictionary's concept text where the SAE ships one);
    - evidence: cos(query, mean of this index's firing snippets);
    - direction: cos(query, the latent's contrastive direction from the SAE's dictionary - its
      activating contexts minus non-activating ones, so what every text shares cancels out).

    score = (1 - dw) * (lw * name + (1 - lw) * evidence) + dw * direction, times
    (1 - qw) + qw * quality, so a latent whose label detects it poorly counts less. Name and
    evidence are centred: minus ``center`` x the latent's mean similarity to the taxonomy's
    concepts, so a latent whose contexts resemble any property does not outrank one that
    resembles this one. Each signal
    nominates its ``pool`` best latents; a nominee's missing signal counts as that signal's
    pool floor. All of it is matrix products over the index's in-memory latent table
    (:mod:`indexer.store.latent_table`; pass ``table`` when the caller holds it). ``query`` may be
    given already embedded.
    """
    from indexer.store.latent_table import latent_table

    table = table if table is not None else latent_table(store)
    if table.size == 0:
        return []
    q = get_embedder().encode_query(query) if isinstance(query, str) else np.asarray(query, np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    pool = min(max(top * 4, 200), table.size)
    name, evidence = table.label_vecs @ q, table.snippet_vecs @ q
    if center and table.label_ref is not None:
        name, evidence = name - center * table.label_ref, evidence - center * table.snippet_ref
    signals = [(label_weight * (1 - direction_weight), name), ((1 - label_weight) * (1 - direction_weight), evidence)]
    if direction_weight > 0:
        from indexer.labels.dictionary import dictionary_for

        manifest = read_manifest(store)
        d = dictionary_for(manifest.recipe) if manifest is not None else None
        if d is not None:
            dirs = d.directions[np.minimum(table.ids, d.directions.shape[0] - 1)]
            signals.append((direction_weight, dirs.astype(np.float32) @ q))
        else:
            signals = [(w / (1 - direction_weight), sims) for w, sims in signals]
    nominated = np.zeros(table.size, bool)
    tops = []
    for _, sims in signals:
        best = np.argpartition(-sims, pool - 1)[:pool]
        nominated[best] = True
        tops.append(best)
    rows = np.flatnonzero(nominated)
    score = np.zeros(len(rows), np.float64)
    for (w, sims), best in zip(signals, tops):
        floor = float(sims[best].min())
        in_pool = np.zeros(table.size, bool)
        in_pool[best] = True
        score += w * np.where(in_pool[rows], sims[rows], floor)
    qual = table.quality[rows]
    score *= (1 - quality_weight) + quality_weight * np.where(np.isnan(qual), 0.5, qual)
    order = np.lexsort((table.ids[rows], -score))[:top]
    return [(int(table.ids[rows[i]]), float(score[i])) for i in order]


def cosine_matrix(vectors: list[list[float]]) -> np.ndarray:
    m = np.asarray(vectors, dtype=np.float32)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    m = m / np.maximum(n, 1e-8)
    return m @ m.T
