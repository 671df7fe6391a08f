"""The concept dictionary of an SAE: labels, kinds, quality scores and directions per latent,
built once on the SAE's training corpus (`saedex build-dictionary`) and shipped beside it."""

from __future__ import annotations

import numpy as np

from indexer.encode.sae import sae_dir
from indexer.labels.dictionary.store import Dictionary, load_dictionary


def dictionary_for(recipe) -> Dictionary | None:
    """The dictionary of an index's SAEs (its :class:`indexer.encode.recipe.Recipe`), if one was built
    for exactly these weights: the token SAE's, and where the index holds the concept family its
    SAE's too, at the concept latents' ids (``sae.d_sae + j``). Every entry says its ``family``."""
    token = load_dictionary(sae_dir(recipe.sae.path), recipe.sae.hash)
    concept = concept_dictionary(recipe)
    if concept is None:
        return token
    return merged(token, concept, recipe.sae.d_sae)


def concept_dictionary(recipe) -> Dictionary | None:
    """The dictionary of an index's concept SAE alone (its rows are the concept latents' local
    ids, 0..d_sae-1), if the index holds the family and one was built for exactly these weights."""
    return None if recipe.concept is None else load_dictionary(sae_dir(recipe.concept.path, "concept"), recipe.concept.hash)


def merged(token: Dictionary | None, concept: Dictionary, offset: int) -> Dictionary:
    """One dictionary over both families' latent ids (a token dictionary absent: its rows empty)."""
    dim = concept.label_vecs.shape[1]
    tok_dirs = token.directions if token is not None else np.zeros((offset, dim), np.float32)
    tok_labels = token.label_vecs if token is not None else np.zeros((offset, dim), np.float32)
    latents = {l: {**e, "family": "token"} for l, e in (token.latents if token is not None else {}).items()}
    latents.update({offset + l: {**e, "family": "concept"} for l, e in concept.latents.items()})
    return Dictionary(sae_hash=f"{token.sae_hash if token else '-'}+{concept.sae_hash}", latents=latents,
                      directions=np.concatenate([tok_dirs[:offset], concept.directions]),
                      label_vecs=np.concatenate([tok_labels[:offset], concept.label_vecs]),
                      build={"token": token.build if token else None, "concept": concept.build,
                             "embedder": concept.build.get("embedder")},
                      unit_directions=None if concept.unit_directions is None else np.concatenate(
                          [np.zeros((offset, concept.unit_directions.shape[1]), np.float32), concept.unit_directions]))


class DictionaryLabeller:
    """Labels from the SAE's shipped concept dictionary: the same names for the same latents in every
    index, checked against this index's examples (:mod:`indexer.labels.dictionary.localise`)."""

    name = "dictionary"

    @staticmethod
    def keeps(payload: dict, dictionary_has_it: bool) -> bool:
        """Never kept as stored: re-reading the dictionary costs nothing and follows its rebuilds."""
        return False


__all__ = ["Dictionary", "DictionaryLabeller", "dictionary_for", "load_dictionary"]
