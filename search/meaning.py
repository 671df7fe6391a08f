"""The query's own meaning, read through the concept latents (a term of the SAE ranking).

A concept latent's decoder row lives in the sentence embedder's space - the space the query is
embedded in - and a sentence's embedding is (up to the SAE's error) ``b_dec + sum_i a_i d_i``. So
the query's cosine to a sentence decomposes over the latents: ``q . x ~ q . b_dec + sum_i a_i (q . d_i)``.
Adding ``weight x (q . d_i)`` to each concept latent's coefficient in the ranking query adds that
decomposed similarity to a document's score (max-pooled over its sentences), one readable term per
latent: a latent pointing along the query raises a document that has it, one pointing away
(``q . d_i < 0``, e.g. "positive" for "negative review") lowers it. Label matching picks the
latents whose *names* fit a query; this term reaches the ones whose *direction* fits it, which is
where the label part is weakest (tone, sentiment, speech acts).

Measured on the 17 dev queries (README "The query's meaning through the concept latents"; odd
lines tune, even lines validate; ``benchmarks/meaning.py``): SAE MAP x dense 1.312 -> 1.330 over
all queries, tuning half 1.464 -> 1.479, validation half 1.155 -> 1.178 at weight 0.25 (the tuning half's pick among 0,
0.25, 0.5, 0.75, 1, 2, 4), 15 of 17 queries equal or better. It is left out of hybrid search:
there the dense ranking already carries the query's meaning, and on the tuning half hybrid
MAP fell with it (1.381 -> 1.358).

The weight is a search parameter (``SearchParams.meaning_weight``, default 0.25; ``--meaning-weight``).
Only where the concept SAE reads the query embedder's space (the shipped MiniLM family): an mpnet
family's decoder rows are not comparable with a MiniLM query vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from indexer.encode.embedder import DEFAULT_EMBEDDER, same_embedder, unit_embedder
from indexer.encode.recipe import Recipe
from indexer.encode.sae import load_sae, sae_dir

MEANING_LATENTS = 100  # the concept latents with the largest |q . d_i|: 100, 200, 400 and all 2,048 measured alike


@dataclass(frozen=True)
class ConceptDirections:
    """The concept family's decoder rows, by latent id (the index's id space)."""

    ids: np.ndarray  # (n,) int64: latent ids (token SAE width + j)
    rows: np.ndarray  # (n, dim) float32: decoder rows in the query embedder's space


def concept_directions(recipe: Recipe) -> ConceptDirections | None:
    """The index's concept SAE's decoder rows, or None where the index has no concept family, its
    SAE is not the one the index was built with, or it reads another embedder's space."""
    if recipe.concept is None:
        return None
    sae = load_sae(sae_dir(recipe.concept.folder, "concept"))
    if recipe.concept.hash is not None and sae.content_hash() != recipe.concept.hash:
        return None
    if not same_embedder(unit_embedder(sae), DEFAULT_EMBEDDER):  # queries are embedded by the default embedder
        return None
    rows = sae.W_dec.detach().float().numpy()
    return ConceptDirections(ids=recipe.sae.d_sae + np.arange(rows.shape[0], dtype=np.int64), rows=np.ascontiguousarray(rows))


def meaning_terms(directions: ConceptDirections, query_vec: np.ndarray, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(latent ids, coefficients per unit of activation): the ``n`` concept latents whose decoder
    rows align most with the query in either sign, each with ``scale x (q . d_i)``."""
    dots = directions.rows @ np.asarray(query_vec, np.float32)
    n = min(n, len(dots))
    keep = np.argpartition(-np.abs(dots), n - 1)[:n] if n < len(dots) else np.arange(len(dots))
    keep = keep[np.lexsort((keep, -np.abs(dots[keep])))]  # strongest first, ties by id
    return directions.ids[keep], scale * dots[keep].astype(np.float64)
