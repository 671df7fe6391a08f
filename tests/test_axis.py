"""Axis resolution and positions (analyses/axis.py): no index needed, MiniLM only."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from analyses.axis import Axis, positions, resolve_axis, value_profile


def test_an_axis_resolves_to_poles_a_taxonomy_group_or_the_nearest_concepts():
    ax = resolve_axis("objective description vs opinion")
    assert ax.source == "poles" and ax.values == ["objective description", "opinion"]
    assert resolve_axis("formal versus casual").values == ["formal", "casual"]
    topic = resolve_axis("news topic")
    assert topic.source == "taxonomy group: topic" and {"football", "business", "election"} <= set(topic.values)
    assert resolve_axis("tone").source == "taxonomy group: tone"
    other = resolve_axis("reasoning style")  # no group is close enough: the nearest concepts
    assert other.source == "nearest taxonomy concepts" and len(other.values) == 24


def test_positions_weigh_latents_by_their_lean_and_ignore_document_length():
    W = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], np.float32)  # latent 2 leans to both
    p90 = np.array([2.0, 2.0, 2.0], np.float32)
    X = sp.csr_matrix(np.array([[2.0, 0.0, 0.0], [0.0, 50.0, 0.0], [8.0, 0.0, 0.0]], np.float32))
    F = positions(X, p90, W)
    assert np.allclose(F[0], [1, 0]) and np.allclose(F[1], [0, 1]) and np.allclose(F[2], F[0])  # capped, unit length
    ax = Axis("x", ["a", "b"], ["a", "b"], "poles")
    prof = value_profile(F, np.array([0, 1, 0]), 2, ax)
    assert prof[0][0]["value"] == "a" and prof[1][0]["value"] == "b"


def test_query_matching_subtracts_how_similar_a_latent_is_to_any_property():
    """A latent whose contexts resemble every property (high mean similarity to the taxonomy)
    must not outrank one that resembles this query specifically."""
    from search.latents import latents_for_query
    from indexer.store.latent_table import LatentTable

    q = np.array([1.0, 0.0, 0.0], np.float32)
    generic = np.array([0.8, 0.6, 0.0], np.float32)  # cos 0.8 to the query, close to everything
    specific = np.array([0.7, 0.0, 0.714], np.float32)  # cos 0.7 to the query, unlike the others
    vecs = np.stack([generic, specific]) / np.linalg.norm(np.stack([generic, specific]), axis=1, keepdims=True)
    table = LatentTable(token="t", ids=np.array([1, 2]), label_vecs=vecs, snippet_vecs=vecs, p90=np.ones(2, np.float32),
                        doc_freq=np.full(2, 0.1, np.float32), quality=np.full(2, np.nan, np.float32), labels=["g", "s"],
                        kinds=["lexical"] * 2, descriptions=["", ""], label_ref=np.array([0.6, 0.2], np.float32),
                        snippet_ref=np.array([0.6, 0.2], np.float32))
    assert [i for i, _ in latents_for_query(None, q, 2, table=table, center=0.0)] == [1, 2]
    assert [i for i, _ in latents_for_query(None, q, 2, table=table, center=1.0)] == [2, 1]


def test_the_pole_model_learns_latents_whose_contexts_do_not_name_the_poles():
    """Two poles: the documents leaning most to each seed a linear model over all latents. Latent 2
    has no lean of its own (its contexts resemble neither pole word) but occurs only with pole A's
    latent; a document showing only latent 2 must land on A's side, which the lean alone cannot do."""
    from analyses.axis import fit_pole_model

    rng = np.random.default_rng(0)
    n = 200
    a_docs = np.arange(n) < 100
    X = np.zeros((n, 4), np.float32)
    X[a_docs, 0] = rng.uniform(0.5, 2, 100)  # pole A's word latent
    X[a_docs, 2] = rng.uniform(0.5, 2, 100)  # unnamed, but only in A documents
    X[~a_docs, 1] = rng.uniform(0.5, 2, 100)  # pole B's word latent
    X[:, 3] = rng.uniform(0.5, 2, n)  # everywhere
    X[a_docs, 1] = rng.uniform(0, 0.4, 100)  # some of the other pole's word in each: leans differ
    X[~a_docs, 0] = rng.uniform(0, 0.4, 100)
    W = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], np.float32)
    p90 = np.ones(4, np.float32)
    Xs = sp.csr_matrix(X)
    model = fit_pole_model(Xs, p90, positions(Xs, p90, W), np.arange(4))
    first, second = model.strongest()
    assert model.seeds == 40 and sorted(first[:2]) == [0, 2], first
    assert second[0] == 1
    only_unnamed = sp.csr_matrix(np.array([[0, 0, 1.5, 1.0]], np.float32))
    assert positions(only_unnamed, p90, W).sum() == 0  # the lean sees nothing here
    assert model.score(only_unnamed, p90)[0, 0] > 0  # the model places it on A's side


def test_poles_that_do_not_separate_the_documents_are_a_clear_error():
    import pytest

    from analyses.axis import fit_pole_model
    from analyses.matrix import AnalysisError

    X = sp.csr_matrix(np.ones((20, 3), np.float32))
    W = np.array([[1, 0], [0, 1], [0, 0]], np.float32)
    with pytest.raises(AnalysisError, match="do not lean apart"):
        fit_pole_model(X, np.ones(3, np.float32), positions(X, np.ones(3, np.float32), W), np.arange(3))


def test_a_cluster_named_against_its_majority_label_is_warned_about():
    """Twice an auditor's cluster named "human-written" held mostly machine text: the best-matching
    accuracy hid it. Pole names are matched to label values; a mismatch is a warning."""
    from analyses.clustering import label_checks

    out = {"scores": {"table": {"labels": ["gpt2", "human"], "counts": [[30, 10], [5, 40]]}},
           "axis_resolved": {"values": ["human-written", "machine-generated"]},
           "clusters": [{"id": 0, "size": 40, "axis_values": [{"value": "human-written"}]},
                        {"id": 1, "size": 45, "axis_values": [{"value": "machine-generated"}]}]}
    label_checks(out, "source")
    assert [c["majority_label"] for c in out["clusters"]] == ["gpt2", "human"]
    assert out["clusters"][0]["majority_share"] == 0.75
    assert len(out["warnings"]) == 2 and out["warnings"][0].startswith("cluster 0 is named 'human-written' (read as source=human)")
    out["scores"]["table"]["counts"] = [[10, 30], [40, 5]]  # names agree with majorities: no warning
    out.pop("warnings")
    label_checks(out, "source")
    assert "warnings" not in out


def test_a_concept_latents_affinity_reads_its_decoder_row_in_the_value_texts_space():
    """Snippets mix a concept with whatever else its sentences say; the decoder row is the concept
    itself, in the embedder's space: a concept latent leans to the value its row points at, a token
    latent (no row in that space) keeps its snippets' affinity."""
    from analyses.axis import affinities
    from indexer.encode.embedder import get_embedder
    from indexer.store.latent_table import LatentTable

    emb = get_embedder()
    ax = Axis("x", ["praise", "complaint"], ["praise: warm approval", "complaint: angry dissatisfaction"], "poles")
    neutral = emb.encode(["The meeting is on Tuesday at the town hall."])[0]
    praise = emb.encode(["What a wonderful, brilliant job - I loved it."])[0]
    table = LatentTable(token="t", ids=np.array([3, 7]), label_vecs=np.stack([neutral, neutral]),
                        snippet_vecs=np.stack([neutral, neutral]), p90=np.ones(2, np.float32),
                        doc_freq=np.full(2, 0.1, np.float32), quality=np.full(2, np.nan, np.float32), labels=["a", "b"],
                        kinds=["concept"] * 2, descriptions=["", ""], concept=np.array([False, True]))
    directions = np.zeros((4, emb.dim), np.float32)  # the concept SAE's rows: latent 4 + j is row j
    directions[3] = praise
    plain = affinities(table, ax, 8)
    W = affinities(table, ax, 8, directions, concept_offset=4)
    assert np.allclose(W[3], plain[3])  # the token latent: snippets only
    assert W[7, 0] > plain[7, 0] and W[7, 0] > W[7, 1]  # the concept latent now leans to praise
    assert np.allclose(affinities(table, ax, 8, np.zeros((4, 5), np.float32), 4), plain)  # another space: ignored


def test_half_precision_query_cosines_give_the_float32_latents_and_scores(monkeypatch):
    """The query's cosines to every latent run in float16 (half the bytes of a memory-bound
    product); the rows near each signal's pool edge are recomputed in float32. On 6,000 random
    unit rows (64-d: cosines crowd near the edge) the latents, their order and their scores equal
    a float32 product's, per family; without the refinement they do not."""
    import search.latents as sl
    from indexer.store.latent_table import LatentTable

    rng = np.random.default_rng(3)
    n, dim = 6000, 64

    def unit(m):
        return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)

    table = LatentTable(token="t", ids=np.arange(n) * 2, label_vecs=unit(rng.standard_normal((n, dim))),
                        snippet_vecs=unit(rng.standard_normal((n, dim))), p90=np.ones(n, np.float32),
                        doc_freq=np.full(n, 0.1, np.float32), quality=rng.random(n).astype(np.float32),
                        labels=[f"l{i}" for i in range(n)], kinds=["concept"] * n, descriptions=[""] * n,
                        label_ref=(rng.random(n) * 0.05).astype(np.float32), snippet_ref=(rng.random(n) * 0.05).astype(np.float32),
                        concept=np.arange(n) % 3 == 0)
    queries = unit(rng.standard_normal((20, dim)))

    def run(**patches) -> list:
        with monkeypatch.context() as m:
            for name, value in patches.items():
                m.setattr(sl, name, value)
            table.derived.clear()
            return [sl.latents_for_query(None, q, top, table=table, family=fam)
                    for q in queries for fam in ("all", "concept") for top in (50, 120)]

    half_product = sl._similarities

    def float32_similarities(table, d, q):
        half_product(table, d, q)  # caches the stack and the row norms that _refine reads
        return (np.concatenate([table.label_vecs, table.snippet_vecs]) @ q).reshape(2, -1)

    exact = run(_similarities=float32_similarities)
    half = run()
    assert [[i for i, _ in r] for r in half] == [[i for i, _ in r] for r in exact]
    assert max(abs(a - b) for r, s in zip(half, exact) for (_, a), (_, b) in zip(r, s)) < 1e-6
    unrefined = run(_refine=lambda *a, **k: None)
    assert [[i for i, _ in r] for r in unrefined] != [[i for i, _ in r] for r in exact]
