"""What a labeller is, and the registry of them.

A latent's label records who made it (``label_source``: ``dictionary``, ``offline`` or
``llm:MODEL``, ``embedding``). Code that must decide something about a stored label - whether it stays after a
refresh - asks the labeller registered under that source, instead of testing prefixes or types.
"""

from __future__ import annotations

from typing import Protocol

from indexer.labels.concept_labels import ConceptLabeller
from indexer.labels.dictionary import DictionaryLabeller
from indexer.labels.llm import LLMLabeller
from indexer.labels.offline import OfflineLabeller


class Labeller(Protocol):
    name: str

    @staticmethod
    def keeps(payload: dict, dictionary_has_it: bool) -> bool:
        """Whether a label this labeller stored stays while the latent's examples are unchanged."""


LABELLERS: dict[str, type] = {}


def register_labeller(cls: type) -> type:
    LABELLERS[cls.name] = cls
    return cls


for _cls in (DictionaryLabeller, OfflineLabeller, LLMLabeller, ConceptLabeller):
    register_labeller(_cls)


def labeller_of(source: str) -> type | None:
    """The labeller class behind a ``label_source`` (``llm:MODEL`` -> the LLM labeller); None if unknown."""
    return LABELLERS.get(source.split(":", 1)[0])
