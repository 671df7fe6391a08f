"""Concept labels are chosen in the latents' own space and scored on units that did not choose them."""

from __future__ import annotations

import numpy as np
import torch

from indexer.encode.embedder import get_embedder
from indexer.encode.sae import TopKSAE, TopKSAEConfig
from indexer.labels.concept_labels import label_concept_latents, mined_phrases
from indexer.labels.dictionary.vocabulary import Concept

TOPICS = {
    "cooking": ["Simmer the onions in butter until soft.", "Bake the bread for an hour at high heat.",
                "Whisk two eggs with a cup of sugar.", "Season the soup with salt and pepper.", "Chop the garlic finely before frying.",
                "Roast the chicken with lemon and thyme.", "Knead the dough until it is smooth.", "Stir the risotto slowly over low heat.",
                "Grill the fish fillets for four minutes.", "Mix the flour and butter into crumbs.", "Boil the pasta in salted water.",
                "Fry the bacon until crisp in a pan."],
    "football": ["The striker scored a late winning goal.", "The keeper saved a penalty in extra time.",
                 "The referee showed the defender a red card.", "Fans cheered as the captain lifted the cup.",
                 "The winger crossed for a header at the far post.", "The manager made three substitutions at half time.",
                 "Their midfielder was booked for a late tackle.", "The club signed a new centre forward this summer.",
                 "The match ended in a goalless draw.", "He hit the crossbar from thirty yards.",
                 "The home side won the league title.", "A corner kick led to the equaliser."],
}
BACKGROUND = ["The train to Leeds was delayed by an hour.", "She paid the electricity bill online.", "The museum opens at nine.",
              "His laptop battery died during the call.", "We painted the fence green last weekend.", "The bank raised interest rates.",
              "A new bridge crosses the river downtown.", "The printer ran out of ink again.", "They moved to a flat near the park.",
              "The library extended its opening hours.", "Traffic was heavy on the motorway.", "The shop sells second-hand books.",
              "My neighbour plays the violin at night.", "The council approved the housing plan.", "Snow closed the mountain pass.",
              "The company hired forty new engineers.", "He forgot his umbrella on the bus.", "The concert was sold out in minutes.",
              "Our flight landed early in Madrid.", "The hospital opened a new wing.", "She learnt to knit from her grandmother.",
              "The election results came in overnight.", "A stray cat slept on the porch.", "The stock market fell sharply."]


def test_a_concept_latent_gets_its_concept_and_a_random_one_is_unclear():
    emb = get_embedder()
    texts = [t for ts in TOPICS.values() for t in ts] + BACKGROUND
    X = emb.encode(texts)
    centres = [X[[texts.index(t) for t in ts]].mean(0) for ts in TOPICS.values()]
    rng = np.random.default_rng(0)
    noise = rng.normal(size=emb.dim)
    W = np.stack([c / np.linalg.norm(c) for c in centres] + [noise / np.linalg.norm(noise)], axis=1).astype(np.float32)
    b_enc = -np.array([(X @ W[:, j]).mean() for j in range(W.shape[1])], np.float32)  # fire above the corpus mean
    cfg = TopKSAEConfig(d_in=emb.dim, d_sae=W.shape[1], k=4, apply_b_dec_to_input=False)
    sae = TopKSAE(W_enc=torch.from_numpy(W), b_enc=torch.from_numpy(b_enc), W_dec=torch.from_numpy(W.T.copy()),
                  b_dec=torch.zeros(emb.dim), cfg=cfg)
    vocab = [Concept("cooking", "cooking: preparing food in a kitchen", "taxonomy"),
             Concept("football", "football: association football matches and players", "taxonomy"),
             Concept("finance", "finance: money, banks and markets", "taxonomy"),
             Concept("travel", "travel: journeys, flights and trains", "taxonomy")]
    labels = label_concept_latents(sae, X, texts, vocab, emb.encode([c.text for c in vocab]), emb, n_background=100, progress=False)
    assert labels[0].label == "cooking" and labels[0].kind == "concept" and labels[0].quality >= 0.8
    assert labels[1].label == "football" and labels[1].kind == "concept" and labels[1].quality >= 0.8
    assert labels[0].exemplar in TOPICS["cooking"] and set(labels[1].top_units) <= set(TOPICS["football"]) | set(BACKGROUND)
    # a random direction names nothing: it says so instead of a near miss
    assert labels[2].kind == "unclear" and labels[2].label == "unclear" and labels[2].quality < 0.8


def test_mined_phrases_are_shared_by_top_units_and_rare_elsewhere():
    from collections import Counter

    top = ["the red card was shown", "a second red card for him", "red card after the tackle", "the keeper was fine"]
    background = Counter({"card": 3, "the": 100})
    phrases = mined_phrases(top, background, 100)
    assert phrases[0] == "red card" and "card" not in phrases  # the longer phrase covers its words


class _OtherSpace:
    """A second embedding space (MiniLM through a fixed random projection to 96 dimensions): the
    index embedder when the concept SAE's units were embedded by another model (mpnet in use;
    no second model ships for CI)."""

    name, dim = "projected-minilm", 96

    def __init__(self):
        self.base = get_embedder()
        self.P = np.random.default_rng(1).normal(size=(self.base.dim, self.dim)).astype(np.float32)

    def encode(self, texts, batch_size=256, **_):
        v = self.base.encode(texts, batch_size=batch_size) @ self.P
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_concept_sae_on_another_embedder_keeps_its_own_space_and_meets_queries_in_the_index_space(tmp_path):
    """Labels are chosen in the units' space; label vectors and directions are given in the index
    embedder's (where queries are matched), the decoder rows kept apart; saved and loaded alike,
    and carried by the dictionary merged over both families."""
    from indexer.labels.concept_labels import build_concept_dictionary
    from indexer.labels.dictionary import merged
    from indexer.labels.dictionary.store import load_dictionary, save_dictionary

    emb, other = get_embedder(), _OtherSpace()
    texts = [t for ts in TOPICS.values() for t in ts] + BACKGROUND
    X = emb.encode(texts)
    centres = [X[[texts.index(t) for t in ts]].mean(0) for ts in TOPICS.values()]
    W = np.stack([c / np.linalg.norm(c) for c in centres], axis=1).astype(np.float32)
    b_enc = -np.array([(X @ W[:, j]).mean() for j in range(W.shape[1])], np.float32)
    cfg = TopKSAEConfig(d_in=emb.dim, d_sae=2, k=2, apply_b_dec_to_input=False)
    sae = TopKSAE(W_enc=torch.from_numpy(W), b_enc=torch.from_numpy(b_enc), W_dec=torch.from_numpy(W.T.copy()),
                  b_dec=torch.zeros(emb.dim), cfg=cfg)
    units = tmp_path / "units"
    units.mkdir()
    (units / "units.txt").write_text("\n".join(texts), encoding="utf-8")
    np.save(units / "shard_00000.npy", X.astype(np.float16))
    vocab = [Concept("cooking", "cooking: preparing food in a kitchen", "taxonomy"),
             Concept("football", "football: association football matches and players", "taxonomy")]
    d = build_concept_dictionary(sae, units, vocab, emb, progress=False, text_emb=other)
    assert [d["latents"][j]["label"] for j in (0, 1)] == ["cooking", "football"]
    assert d["label_vecs"].shape == (2, 96) and d["directions"].shape == (2, 96) and d["unit_directions"].shape == (2, emb.dim)
    assert np.allclose(d["unit_directions"], W.T / np.linalg.norm(W.T, axis=1, keepdims=True), atol=1e-5)
    q = other.encode(["recipes and cooking food", "a football match"])
    assert (d["directions"] @ q.T).argmax(axis=0).tolist() == [0, 1]  # each query meets its latent in the index space
    assert (d["label_vecs"] @ q.T).argmax(axis=0).tolist() == [0, 1]
    save_dictionary(tmp_path, d, sae)
    back = load_dictionary(tmp_path, sae.content_hash())
    assert back.build["embedder"] == emb.name and np.allclose(back.space_directions, d["unit_directions"], atol=1e-3)
    both = merged(None, back, offset=5)
    assert both.directions.shape == (7, 96) and both.space_directions.shape == (7, emb.dim)
    assert both.build["embedder"] == emb.name and not both.space_directions[:5].any()
    # the index's own embedder: one space, nothing kept apart
    same = build_concept_dictionary(sae, units, vocab, emb, progress=False)
    assert "unit_directions" not in same and same["label_vecs"].shape == (2, emb.dim)


def test_a_latent_that_follows_a_names_first_piece_is_labelled_by_that_form():
    """MiniLM reads a rare name through its first WordPiece; sentences about Cragg, Cruyff and
    Crespo share nothing but "Cr" and a concept latent can still gather them. Its label says so
    (with the words shown, the piece bracketed) instead of the nearest meaning; a latent whose
    units all name one word, or that share a topic, is not a form."""
    from indexer.labels.forms import background_pieces, shared_first_piece

    emb = get_embedder()
    names = ["Cragg won the mile in record time.", "Cruyff changed how the game is played.", "Crespo signed a new contract.",
             "Mr Cranmer will chair the inquiry.", "Crichton's novel sold a million copies.", "Crivelli denied the claims.",
             "The Cratchit family ate a small goose.", "Cresswell was elected in 1997."]
    bg = background_pieces(BACKGROUND, emb.first_piece)
    form = shared_first_piece(names, bg, emb.first_piece)
    assert form is not None and form.piece == "cr" and form.share == 1.0 and form.background == 0.0
    assert form.label.startswith("first piece of a name split into tokens: [Cr]")
    assert form.quality == 1.0  # every scoring unit holds it, no background unit does
    one_word = ["Yukos filed for bankruptcy.", "Yukos sold its unit.", "Shares in Yukos fell.", "Yukos owes tax.", "Yukos appealed."]
    assert shared_first_piece(one_word, bg, emb.first_piece) is None  # the word names that latent
    assert shared_first_piece(TOPICS["football"], bg, emb.first_piece) is None
    stem = ["Spider-Man swung across the city.", "Spiderman 2 topped the box office.", "Dew covered the spiderwebs.",
            "Spider-Man returns next summer.", "The spidery handwriting was hard to read.", "Spiderman fans queued all night."]
    assert shared_first_piece(stem, bg, emb.first_piece) is None  # "[Spider]": a stem, which its meaning names
    assert shared_first_piece(names, [], emb.first_piece) is None
