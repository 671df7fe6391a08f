"""The concept dictionary: its scoring pieces, its on-disk contract, the shipped dictionary of the
default SAE, and that indexes take their labels from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analyses.correlations import label_head
from indexer.labels.dictionary.labelling import _lexical_quality, auc_rows
from indexer.labels.dictionary.store import load_dictionary, save_dictionary
from indexer.labels.dictionary.vocabulary import taxonomy
from indexer.encode.sae import DEFAULT_SAE_DIR, load_sae
from tests.conftest import cli


def test_auc_rows_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, (9, 3)), rng.normal(0, 1, (40, 3))
    pos[0, 2] = neg[0, 2]  # a tie counts half
    want = [np.mean([(p > n) + 0.5 * (p == n) for p in pos[:, j] for n in neg[:, j]]) for j in range(3)]
    assert auc_rows(pos, neg) == pytest.approx(want)
    assert auc_rows(np.ones((3, 1)), np.zeros((5, 1)))[0] == 1.0


def test_lexical_quality_is_a_whole_word_detector():
    act = ["waiting for the bus", "for sure", "done for"]
    bg = ["forest walk", "information", "made for you"]
    # TPR 1, FPR 1/3 ("forest" and "information" do not count): 0.5 * (1 + 1 - 1/3)
    assert _lexical_quality(["for"], act, bg) == pytest.approx(0.5 * (1 + 1 - 1 / 3))
    assert _lexical_quality(["␣"], act, bg) == 0.5
    assert _lexical_quality(["bus", "sure"], act, bg) == pytest.approx(0.5 * (1 + 2 / 3 - 0))


def test_label_heads_compare_what_latents_fire_on():
    assert label_head('"stockholm" (ferry, grandma)') == '"stockholm"'
    assert label_head('token "for" after "waiting"') == "for"
    assert label_head('token "socks" (clothing)') == "socks"
    assert label_head("plot synopsis") == "plot synopsis"


def test_taxonomy_is_well_formed():
    t = taxonomy()
    assert len(t) >= 200
    names = [c.name for c in t]
    assert len(set(names)) == len(names)
    assert all(c.text.startswith(c.name + ": ") and len(c.text) > len(c.name) + 10 for c in t)


class _Weights:
    def __init__(self, h: str):
        self.h = h

    def content_hash(self) -> str:
        return self.h


def test_dictionary_round_trip_and_refusal_for_other_weights(tmp_path: Path):
    d = {"latents": {3: {"label": "sarcasm", "kind": "concept", "quality": 0.81, "description": "x"}},
         "directions": np.eye(4, 6, dtype=np.float32), "label_vecs": np.ones((4, 6), np.float32), "build": {"documents": 7}}
    save_dictionary(tmp_path, d, _Weights("abc"))
    got = load_dictionary(tmp_path, "abc")
    assert got is not None and got.entry(3)["label"] == "sarcasm" and got.entry(2) is None
    assert got.directions.shape == (4, 6) and got.directions.dtype == np.float32
    assert got.quality()[3] == pytest.approx(0.81)
    assert load_dictionary(tmp_path, "other-weights") is None  # never applied to another SAE
    assert load_dictionary(tmp_path / "nothing-here", None) is None


SHIPPED = (DEFAULT_SAE_DIR / "dictionary.json").exists()


@pytest.mark.skipif(not SHIPPED, reason="no dictionary shipped beside the default SAE")
def test_shipped_dictionary_describes_the_default_sae():
    sae = load_sae()
    d = load_dictionary(DEFAULT_SAE_DIR, sae.content_hash())
    assert d is not None, "dictionary.json was built for other weights"
    assert d.directions.shape == (sae.d_sae, 384)
    assert len(d.latents) >= 0.5 * sae.d_sae
    kinds = {e["kind"] for e in d.latents.values()}
    assert kinds <= {"concept", "lexical"} and "concept" in kinds
    q = np.array([e["quality"] for e in d.latents.values()])
    assert ((0 <= q) & (q <= 1)).all()
    assert np.isfinite(d.directions).all() and np.isfinite(d.label_vecs).all()
    norms = np.linalg.norm(d.directions[sorted(d.latents)], axis=1)
    unit = np.abs(norms - 1) < 0.01
    # the few latents firing in every background context have no contrast (zero direction)
    assert unit.mean() > 0.999 and np.all(unit | (norms == 0)), norms[~unit]


@pytest.mark.skipif(not SHIPPED, reason="no dictionary shipped beside the default SAE")
def test_indexes_take_labels_kind_and_quality_from_the_dictionary(bbc_index):
    r = cli("latents", "--index", bbc_index, "--top", "30", "--json")
    assert r.exit_code == 0, r.output
    lats = json.loads(r.stdout)["latents"]
    from_dict = [l for l in lats if l["label_source"] == "dictionary"]
    assert len(from_dict) >= 0.3 * len(lats)
    for l in from_dict:
        assert l["kind"] in ("concept", "lexical") and 0 <= l["quality"] <= 1
    # the others: latents the dictionary lacks, or entries that do not describe what fires here -
    # a lexical token that does not fire, a concept that does not name the top examples (AUC < 0.5);
    # the description says which
    d = load_dictionary(DEFAULT_SAE_DIR)
    for l in lats:
        if l["label_source"] != "dictionary":
            e = d.entry(l["id"])
            assert e is None or f"The dictionary's label {e['label']!r}" in l["description"], (l["label"], e)
    # the index's own labels stay one flag away
    r = cli("label", "--index", bbc_index, "--own-data", "--json")
    assert r.exit_code == 0, r.output
    lats = json.loads(cli("latents", "--index", bbc_index, "--top", "30", "--json").stdout)["latents"]
    assert all(l["label_source"] == "offline" for l in lats)
    assert cli("label", "--index", bbc_index, "--json").exit_code == 0  # back to the dictionary


@pytest.mark.slow  # loads the reader model
def test_build_dictionary_end_to_end_and_resume(tmp_path: Path):
    """A tiny build (4 real BBC paragraphs, taxonomy only): every stage runs, the dictionary loads
    for the SAE it was built for, and a second run resumes from the saved stages. (8 paragraphs
    embedded twice the contexts for the same checks: 48 s instead of 24.)"""
    import shutil

    from indexer.labels.dictionary.build import build_dictionary
    from tests.conftest import load_bbc, write_jsonl

    sae_dir = tmp_path / "sae"
    shutil.copytree(DEFAULT_SAE_DIR, sae_dir, ignore=shutil.ignore_patterns("dictionary.*"))
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": r["text"]} for r in load_bbc(1, seed=5, max_chars=400)][:4])
    work = tmp_path / "work"
    rec = build_dictionary(corpus, sae_dir, work, max_docs=4, per_latent=4, n_background=8, vocabulary=taxonomy(), progress=False)
    assert rec["documents"] == 4 and rec["vocabulary"] == len(taxonomy()) and rec["background_contexts"] >= 4
    d = load_dictionary(sae_dir, load_sae(sae_dir).content_hash())
    assert d is not None and len(d.latents) > 20
    for l, e in d.latents.items():
        assert e["kind"] in ("concept", "lexical") and 0 <= e["quality"] <= 1 and e["label"]
        assert abs(float(np.linalg.norm(d.directions[l])) - 1) < 0.01
    timings = json.loads((work / "timings.json").read_text())
    build_dictionary(corpus, sae_dir, work, max_docs=4, per_latent=4, n_background=8, vocabulary=taxonomy(), progress=False)
    again = json.loads((work / "timings.json").read_text())
    assert again["collect"] == timings["collect"] and again["embed_contexts"] == timings["embed_contexts"]  # resumed
