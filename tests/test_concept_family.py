"""The concept family on planted structure between *independent* slices of real articles: a concept
said in different words (an apology, never the same sentence twice) in 10% of B is a top-5 diff
latent of the concept family whose examples are the planted documents and whose label names it,
which no token latent does; two such concepts planted together come out of ``correlations``; and
the paper's flagship closing phrase is found between independent slices."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest

from indexer.encode.embedder import DEFAULT_EMBEDDER
from indexer.labels import refresh
from indexer.store import open_store
from tests.conftest import cli, load_bbc, write_jsonl

APOLOGIES = [
    "Sorry, I can't make it tonight.", "I apologise for the delay.", "My apologies for the confusion.", "I'm so sorry about yesterday.",
    "Please forgive me for being late.", "Sorry for the mix-up with your order.", "I regret the inconvenience this caused.",
    "Apologies, that was my mistake.", "I am sorry I missed your call.", "Forgive my rudeness earlier.", "We apologise for any disruption.",
    "Sorry, I didn't mean to upset you.", "I owe you an apology.", "Pardon me for interrupting.", "Excuse the mess, we are moving.",
    "Sorry it took me so long to reply.", "I apologize if I offended anyone.", "My bad, I sent the wrong file.",
    "We are sorry for the late delivery.", "Please accept our sincere apologies.", "Sorry to bother you again.",
    "I feel awful about forgetting your birthday.", "Forgive me, I was wrong.", "Apologies for the short notice.",
    "I'm sorry the meeting ran over.", "Sorry, that came out badly.", "We regret the error in yesterday's edition.",
    "I want to say sorry for my behaviour.", "Sorry for the typo in the title.", "I beg your pardon.", "So sorry I couldn't help more.",
    "I truly apologise for my words."]
WEATHER = [
    "It rained all weekend.", "Heavy snow is forecast for Tuesday.", "The sun finally came out this afternoon.",
    "A cold front is moving in from the north.", "Thunderstorms kept us awake all night.", "Fog delayed the morning flights.",
    "Temperatures will drop below freezing tonight.", "Strong winds brought down several trees.", "Drizzle is expected until the evening.",
    "Hail damaged the cars in the car park.", "Frost covered the fields at dawn.", "Showers will clear by lunchtime.",
    "Sleet turned the roads to slush.", "It was a grey and damp day.", "Lightning lit up the whole valley.",
    "A blizzard closed the mountain roads.", "Flooding followed the torrential downpour.", "Mist hung over the lake all morning.",
    "The drought has lasted three months.", "The rain never stopped on our holiday.", "Tomorrow will be mild and sunny.",
    "Gales battered the coast overnight.", "The forecast promises blue skies.", "Clouds gathered over the hills.",
    "The wind chill made it feel minus ten.", "It's bitterly cold outside.", "A heatwave will peak on Thursday.",
    "The humidity made the walk unbearable.", "The monsoon arrived two weeks early.", "A tornado touched down near the town."]
APOLOGY_WORDS = ("sorry", "apolog", "forgiv", "regret", "pardon", "excuse", "remorse", "contrit", "repent")
CLOSING = " I hope it is correct."
CHARS = 650  # ~140 tokens an article; at 900 (~200) this index took 215 s to build, at 650 164 s (alone, model load included)


def independent_slices(n_per_side: int, seed: int, max_chars: int | None, sides: int = 2) -> list[list[dict]]:
    """``sides`` disjoint sets of real BBC articles with the same mix of topics (cut to their last whole
    sentence within ``max_chars``: a plant appended to half a sentence would be half of that sentence)."""
    by_topic = _whole_sentences_by_topic(sides * n_per_side // 5, seed, max_chars)
    out: list[list[dict]] = [[] for _ in range(sides)]
    for ds in by_topic.values():
        for k in range(sides):
            out[k] += ds[k::sides]
    return out


def _whole_sentences_by_topic(n_per_topic: int, seed: int, max_chars: int | None) -> dict[str, list[dict]]:
    """``load_bbc`` articles cut to their last whole sentence, by topic (the same seed gives the same
    first articles of each topic whatever ``n_per_topic``: its shuffle does not depend on it)."""
    by_topic: dict[str, list[dict]] = {}
    for d in load_bbc(n_per_topic, seed=seed, max_chars=max_chars):
        end = max(d["text"].rfind(". "), d["text"].rfind(".\n"))
        d["text"] = d["text"][: end + 1] if end > 0 else d["text"]
        by_topic.setdefault(d["topic"], []).append(d)
    return by_topic


@pytest.fixture(scope="module")
def concept_index(tmp_path_factory, indexer_obj):
    """Four sets of 200 different real articles: A; B with an apology appended to 20 of them (10%,
    each a different sentence); C with an apology and a weather sentence appended together to 10
    (5%); D with the flagship closing phrase at the end of 20 (10%). One index for all. Articles are
    cut to their last whole sentence within CHARS (a headline and a few paragraphs)."""
    rng = random.Random(11)
    a, b, c = independent_slices(200, seed=5, max_chars=CHARS, sides=3)
    # D: the next 40 articles of each topic (disjoint from A, B and C, which take the first 120)
    d = [x for ds in _whole_sentences_by_topic(160, 5, CHARS).values() for x in ds[120:160]]
    closing_d = set(random.Random(3).sample(range(len(d)), len(d) // 10))
    planted_b = set(rng.sample(range(len(b)), 20))
    pair_c = set(rng.sample(range(len(c)), 10))
    sorry, sorry_c, rain = iter(rng.sample(APOLOGIES, 20)), iter(rng.sample(APOLOGIES, 10)), iter(rng.sample(WEATHER, 10))
    rows = [{"id": f"a{i}", "text": d["text"], "side": "a"} for i, d in enumerate(a)]
    rows += [{"id": f"b{i}", "text": d["text"] + (" " + next(sorry) if i in planted_b else ""), "side": "b"} for i, d in enumerate(b)]
    rows += [{"id": f"c{i}", "text": d["text"] + (" " + next(rain) + " " + next(sorry_c) if i in pair_c else ""), "side": "c"}
             for i, d in enumerate(c)]
    rows += [{"id": f"d{i}", "text": x["text"].rstrip() + (CLOSING if i in closing_d else ""), "side": "d"} for i, x in enumerate(d)]
    path = write_jsonl(tmp_path_factory.mktemp("concept") / "concept.jsonl", rows)
    r = cli("index", str(path), "--index", "concept", "--dataset", "bbc", "--id-field", "id", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    return {"apology": {f"b{i}" for i in planted_b} | {f"c{i}" for i in pair_c}, "planted_b": {f"b{i}" for i in planted_b},
            "pair": {f"c{i}" for i in pair_c}, "closing": {f"d{i}" for i in closing_d}}


def _diff(*extra: str) -> list[dict]:
    r = cli("diff", "--index", "concept", "--a", "side=a", "--b", "side=b", "--top", "5", "--json", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["latents"]


def _names_apology(label: str) -> bool:
    return any(w in label.lower() for w in APOLOGY_WORDS)


def test_a_paraphrased_concept_is_a_top_diff_latent_of_the_concept_family_only(concept_index):
    top = _diff("--family", "concept")
    found = [x for x in top if x["examples"] and set(x["examples"]) <= concept_index["planted_b"] and _names_apology(x["label"])]
    assert found, [(x["latent"], x["label"], x["diff"], x["examples"]) for x in top]
    assert found[0]["more_in"] == "b"
    r = cli("latent", str(found[0]["latent"]), "--index", "concept", "--json")
    assert json.loads(r.stdout)["family"] == "concept"
    # the token family alone has no latent that says it
    token_top = _diff("--family", "token")
    assert not [x for x in token_top if set(x["examples"]) <= concept_index["planted_b"] and _names_apology(x["label"])], token_top
    assert all(x["latent"] < 16384 for x in token_top)


def test_two_paraphrased_concepts_planted_together_are_a_correlated_pair(concept_index):
    # at the defaults: MiniLM puts two unrelated one-word concept labels at cosine 0.2-0.3 ("apology"
    # and "rain": 0.24), so two concept latents are held to --max-label-sim + 0.07 (analyses/correlations.py)
    r = cli("correlations", "--index", "concept", "--where", "side=c", "--family", "concept", "--top", "20", "--json")
    assert r.exit_code == 0, r.output
    pairs = json.loads(r.stdout)["pairs"]
    found = [p for p in pairs if set(p["examples"]) <= concept_index["pair"]
             and (_names_apology(p["label_a"]) or _names_apology(p["label_b"]))]
    assert found and found[0]["npmi"] > 0.4, pairs[:5]


def test_search_explains_a_concept_hit_by_its_sentence(concept_index):
    r = cli("search", "someone apologising", "--index", "concept", "--family", "concept", "--k", "5", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["latents"] and all(w["latent"] >= 16384 for w in res["latents"])
    hits = res["results"]
    # each hit's explanation points at its firing sentence: planted apologies, and real news ones
    # ("... will not apologise for making allegations")
    said = [h["text"][slice(*h["explanation"][0]["spans"][0])] for h in hits]
    assert sum(_names_apology(t) or t in APOLOGIES for t in said) >= 4, said
    assert sum(h["id"] in concept_index["apology"] for h in hits) >= 2


def test_flagship_closing_phrase_between_independent_slices(concept_index):
    """" I hope it is correct." at the end of 10% of D, where A and D are *different* real
    articles (200 each): the phrase is found with D's planted documents as its examples."""
    r = cli("diff", "--index", "concept", "--a", "side=a", "--b", "side=d", "--top", "5", "--family", "concept", "--json")
    top = json.loads(r.stdout)["latents"]
    hits = [x for x in top if x["examples"] and set(x["examples"]) <= concept_index["closing"]]
    assert hits, [(x["latent"], x["label"], x["diff"], x["examples"][:3]) for x in top]


def test_labels_chosen_in_the_units_own_space_are_the_index_spaces_when_both_are_one_model(concept_index, monkeypatch):
    """A concept SAE on another embedder (mpnet) has its labels chosen on this index in its own
    space (vectors cached apart) and re-embedded where queries meet them. Run with MiniLM as that
    "other" model, the path must give the labels the one-space path gives, and write its own cache."""
    def labels(store):
        return {p.latent: p.payload.get("label") for p in store.get_latents() if p.payload.get("family") == "concept"}

    real = refresh.dictionary_for

    def own_space(recipe):
        d = real(recipe)
        return dataclasses.replace(d, unit_directions=d.directions.copy(), build={**d.build, "embedder": DEFAULT_EMBEDDER})

    # 300 concept latents, sampled once (relabelling all ~1,500 twice cost 70 s of the suite): the
    # statistics are computed whole (the same random draws), then cut to the sample
    real_stats, sample = refresh.latent_statistics, set()

    def sampled_stats(scan, rng):
        stats = real_stats(scan, rng)
        if not sample:
            concept = sorted(l for l in stats if l >= 16384)
            sample.update(random.Random(0).sample(concept, min(300, len(concept))))
        return {l: st for l, st in stats.items() if l in sample}

    monkeypatch.setattr(refresh, "latent_statistics", sampled_stats)
    with open_store("concept") as store:
        refresh.refresh_latents(store, progress=False)  # the one-space path on the sample
        before = {l: v for l, v in labels(store).items() if l in sample}
        monkeypatch.setattr(refresh, "dictionary_for", own_space)
        refresh.refresh_latents(store, progress=False)
        after = labels(store)
        assert store.cache_file("unit_cache.npz").exists()
    same = np.mean([before[l] == after.get(l) for l in before])
    assert len(before) == 300 and same >= 0.98, same


def test_concept_latents_sharing_a_label_are_counted_as_one_concept():
    """``correlations`` folds concept latents labelled alike into the lowest id (by maximum); token
    latents, "unclear" ones and latents of another family keep their own columns."""
    import scipy.sparse as sp

    from analyses.correlations import label_targets, merge_columns
    from indexer.store.latent_table import LatentTable

    ids = np.array([7, 3, 5, 9, 2, 8], np.int64)  # not in id order: the group's lowest id must win
    labels = ["apology", "Apology ", "unclear", "unclear", "apology", "rain"]
    kinds = ["concept", "concept", "unclear", "unclear", "concept", "concept"]
    concept = np.array([True, True, True, True, False, True])  # latent 2 is a token latent labelled "apology"
    n = len(ids)
    table = LatentTable(token=None, ids=ids, label_vecs=np.zeros((n, 1), np.float32), snippet_vecs=np.zeros((n, 1), np.float32),
                        p90=np.zeros(n, np.float32), doc_freq=np.zeros(n, np.float32), quality=np.full(n, np.nan, np.float32),
                        labels=labels, kinds=kinds, concept=concept, descriptions=[""] * n)
    in_family = np.ones(10, bool)
    target = label_targets(table, 10, in_family)
    assert target.tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 8, 9]  # 7 -> 3 (case and spaces aside); 2, 5, 9, 8 alone
    in_family[7] = False  # --family token: nothing of the concept family is merged
    assert label_targets(table, 10, in_family).tolist() == list(range(10))
    X = sp.csr_matrix(np.array([[0, 0, 0, 1.0, 0, 0, 0, 2.0, 0, 0],    # both halves: the stronger kept
                                [0, 0, 0, 0, 0, 0, 0, 0.5, 0, 0],     # the second half alone now counts as 3
                                [0, 0, 0.7, 0, 0, 0, 0, 0, 0, 0]], np.float32))
    M = merge_columns(X, label_targets(table, 10, np.ones(10, bool))).toarray()
    assert M[:, 3].tolist() == [2.0, 0.5, 0.0] and not M[:, 7].any() and M[2, 2] == np.float32(0.7)
