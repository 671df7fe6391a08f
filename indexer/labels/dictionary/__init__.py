"""The concept dictionary of an SAE: labels, kinds, quality scores and directions per latent,
built once on the SAE's training corpus (`saedex build-dictionary`) and shipped beside it."""

from __future__ import annotations

from indexer.encode.sae import sae_dir
from indexer.labels.dictionary.store import Dictionary, load_dictionary


def dictionary_for(recipe) -> Dictionary | None:
    """The dictionary of an index's SAE (its :class:`indexer.encode.recipe.Recipe`), if one was built
    for exactly these weights."""
    return load_dictionary(sae_dir(recipe.sae.path), recipe.sae.hash)


class DictionaryLabeller:
    """Labels from the SAE's shipped concept dictionary: the same names for the same latents in every
    index, checked against this index's examples (:mod:`indexer.labels.dictionary.localise`)."""

    name = "dictionary"

    @staticmethod
    def keeps(payload: dict, dictionary_has_it: bool) -> bool:
        """Never kept as stored: re-reading the dictionary costs nothing and follows its rebuilds."""
        return False


__all__ = ["Dictionary", "DictionaryLabeller", "dictionary_for", "load_dictionary"]
