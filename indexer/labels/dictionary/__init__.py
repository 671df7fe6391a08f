"""The concept dictionary of an SAE: labels, kinds, quality scores and directions per latent,
built once on the SAE's training corpus (`saedex build-dictionary`) and shipped beside it."""

from __future__ import annotations

from indexer.labels.dictionary.store import Dictionary, load_dictionary


def dictionary_for(recipe) -> Dictionary | None:
    """The dictionary of an index's SAE (its :class:`indexer.encode.recipe.Recipe`), if one was built
    for exactly these weights."""
    from indexer.encode.sae import sae_dir

    return load_dictionary(sae_dir(recipe.sae.path), recipe.sae.hash)


__all__ = ["Dictionary", "dictionary_for", "load_dictionary"]
