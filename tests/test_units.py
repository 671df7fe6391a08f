"""The concept family's inputs: sentence units and their balanced, de-duplicated training mix."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from indexer.core.errors import InputError
from indexer.encode.embedder import same_embedder, unit_embedder
from indexer.encode.encoder import Encoder
from indexer.encode.sae import DEFAULT_SAE_DIR, load_sae, sae_dir, shipped_concept_sae
from indexer.encode.units import MAX_CHARS, MAX_UNITS, split_units, units_of
from indexer.train.unit_cache import balanced_units, cache_unit_embeddings


def test_sentences_split_on_ends_and_lines_keeping_abbreviations_and_short_fragments():
    text = 'Mr. Smith went to Washington. He said: "It is fine!" Then he left.  Why?\nA new line that says enough here.'
    assert units_of(text) == ["Mr. Smith went to Washington.", 'He said: "It is fine!" Then he left.  Why?',
                              "A new line that says enough here."]
    for s, e in split_units(text):
        assert text[s:e] == text[s:e].strip() and e > s
    assert units_of("") == [] and units_of("   ") == [] and units_of("just three words") == ["just three words"]


def test_long_units_are_cut_and_long_documents_keep_an_even_spread():
    long = " ".join(["word"] * 400)
    assert all(len(u) <= MAX_CHARS for u in units_of(long)) and "".join(units_of(long)).count("word") == 400
    many = " ".join(f"This is sentence number {i} of the text." for i in range(1000))
    spans = split_units(many)
    assert len(spans) == MAX_UNITS and "number 0 " in many[slice(*spans[0])] and "number 999 " in many[slice(*spans[-1])]


def test_training_units_are_distinct_and_balanced_over_sources():
    big = [(f"A big source says thing {i} today. And adds detail {i} here.", "big") for i in range(500)]
    small = [("The same small sentence said again.", "small")] * 50 + [("Another small one said once.", "small")]
    units, per_source = balanced_units(big + small, 40)
    assert per_source == {"small": 2, "big": 38}  # the small source gives all it has; the rest goes to the big one
    assert len(units) == len(set(units)) == 40
    assert units == balanced_units(big + small, 40)[0]  # seeded


class _FakeEmbedder:
    """Deterministic vectors of the text's length: enough to test the cache's bookkeeping."""

    dim = 3

    def encode(self, texts, batch_size=64):
        return np.array([[len(t), 1.0, 0.0] for t in texts], np.float32)


def test_unit_cache_writes_shards_and_resumes(tmp_path):
    units = [f"unit number {i}" for i in range(25)]
    prog = cache_unit_embeddings(units, tmp_path, _FakeEmbedder(), holdout_units=5, shard_units=8, log=lambda m: None)
    assert prog == {"units_done": 20, "shards": 3, "done": True}
    shards = [np.load(p) for p in sorted(tmp_path.glob("shard_*.npy"))]
    assert [len(s) for s in shards] == [8, 8, 4] and len(np.load(tmp_path / "holdout.npy")) == 5
    assert (tmp_path / "units.txt").read_text().splitlines()[9] == "unit number 9"
    again = cache_unit_embeddings(units, tmp_path, _FakeEmbedder(), holdout_units=5, shard_units=8, log=lambda m: None)
    assert again == prog  # nothing re-embedded


def test_a_concept_latent_peaks_on_its_sentence_and_both_families_share_one_vector():
    from indexer.encode.pooling import PooledDoc, fire_spans, pack

    text = "The striker scored twice. Rain is expected tomorrow."
    tokens = PooledDoc(np.array([3, 9]), np.array([1.0, 2.0], np.float32), np.array([0, 1]), np.array([[0, 3], [4, 11]]))
    units = PooledDoc(np.array([0, 5]), np.array([0.5, 0.7], np.float32), np.array([1, 0]), np.array(split_units(text)))
    doc = PooledDoc.join(tokens, units, offset=16)
    assert doc.indices.tolist() == [3, 9, 16, 21] and doc.argmax_token.tolist() == [0, 1, -2, -1]
    payload = {"_fires": pack(np.stack([doc.indices, doc.argmax_token], axis=1)), "_offsets": pack(doc.offsets),
               "_units": pack(doc.unit_spans)}
    spans = fire_spans(payload, [9, 16, 21])
    assert text[slice(*spans[9])] == "striker"
    assert text[slice(*spans[16])] == "Rain is expected tomorrow." and text[slice(*spans[21])] == "The striker scored twice."


def test_a_concept_sae_embeds_its_units_with_its_own_model_and_only_concept_saes_are_taken():
    """The concept family's units are embedded by the model its SAE was trained on, which may be
    another than the index's (labels and axes keep its space apart: test_concept_labels) but must be
    here; a token SAE given as the concept family is refused with the reason, and "none" indexes
    without one."""
    assert same_embedder("default", "all-MiniLM-L6-v2") and same_embedder("sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2")
    assert not same_embedder("/models/all-mpnet-base-v2", "all-MiniLM-L6-v2")
    other = copy.deepcopy(shipped_concept_sae())
    other.cfg.metadata["saedex_embedder"] = "/models/no-such-embedder"  # (all-mpnet-base-v2 may be here: make mpnet)
    with pytest.raises(InputError, match="'/models/no-such-embedder' is not available here.*make mpnet"):
        Encoder(concept=other)  # its model is needed to embed units: refused before any index is made
    assert unit_embedder(Encoder(concept=shipped_concept_sae()).concept) == "all-MiniLM-L6-v2"
    mpnet = load_sae(sae_dir("mpnet", "concept"))  # the shipped opt-in family, by name
    assert unit_embedder(mpnet) == "all-mpnet-base-v2" and mpnet.d_in == 768 and mpnet.cfg.metadata["saedex_family"] == "concept"
    # the default is the Matryoshka SAE; the earlier flat one ships by name, with its dictionary
    assert shipped_concept_sae().cfg.metadata["training"]["prefixes"] == [128, 512]
    flat = load_sae(sae_dir("flat", "concept"))
    assert unit_embedder(flat) == "all-MiniLM-L6-v2" and not flat.cfg.metadata["training"].get("prefixes")
    assert (sae_dir("flat", "concept") / "dictionary.json").exists()
    with pytest.raises(InputError, match="not a concept-family SAE"):
        Encoder(concept=str(DEFAULT_SAE_DIR))
    assert Encoder.from_options(concept="none").concept is None
