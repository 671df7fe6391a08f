"""The concept dictionary of an SAE: labels, kinds, quality scores and directions per latent,
built once on the SAE's training corpus (`saedex build-dictionary`) and shipped beside it."""

from __future__ import annotations

from indexer.dictionary.store import Dictionary, load_dictionary


def dictionary_for(manifest: dict) -> Dictionary | None:
    """The dictionary of the index's SAE, if one was built for exactly these weights."""
    sae = manifest.get("sae", {})
    path = sae.get("path")
    return load_dictionary(path, sae.get("hash")) if path else None


__all__ = ["Dictionary", "dictionary_for", "load_dictionary"]
