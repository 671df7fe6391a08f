"""Property search over a real index: JSON contract, explanations, baselines, filters, errors,
and the LLM paths against an OpenAI-compatible stub on loopback."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli


def search(*args):
    r = cli("search", *args, "--json")
    return r, (json.loads(r.stdout) if r.exit_code == 0 else None)


def test_sae_search_contract_and_explanations(bbc_index):
    r, out = search("sports results and match reports", "--index", bbc_index, "--k", "5")
    assert r.exit_code == 0, r.output
    assert len(out["results"]) == 5 and out["latents"]
    assert [x["score"] for x in out["results"]] == sorted((x["score"] for x in out["results"]), reverse=True)
    for hit in out["results"]:
        assert {"id", "score", "text", "dataset", "explanation"} <= set(hit)
        assert hit["dataset"] == "bbc" and hit["explanation"]
        assert any(e["spans"] for e in hit["explanation"])  # read apart from the hits (search leaves them out)
        for e in hit["explanation"]:
            assert {"latent", "label", "weight", "activation", "spans"} <= set(e)
            assert e["activation"] > 0 and e["weight"] > 0
            for s, t in e["spans"]:
                assert 0 <= s < t <= len(hit["text"]) and hit["text"][s:t].strip()
    w = [l["weight"] for l in out["latents"]]
    assert w == sorted(w, reverse=True)


def test_rank_weights_formula():
    from search.latents import rank_weights

    w = rank_weights(100, 0.2)
    assert w[0] == pytest.approx(1.0) and w[50] == pytest.approx(pytest.approx(2.718281828 ** (-(50 / 100) / 0.2)))


@pytest.mark.parametrize("method", ["bm25", "dense", "hybrid"])
def test_baselines(bbc_index, method):
    r, out = search("the football club won the match", "--index", bbc_index, "--k", "5", "--method", method)
    assert r.exit_code == 0, r.output
    assert len(out["results"]) == 5
    if method == "hybrid":  # fused with the SAE ranking: explained by its latents
        assert out["results"][0]["explanation"] and out["latents"]
    else:
        assert out["results"][0]["explanation"] == [] and out["latents"] == []
    if method == "bm25":
        assert any(w in out["results"][0]["text"].lower() for w in ("football", "club", "match"))


def test_where_filter_and_large_k(bbc_index):
    r, out = search("economy", "--index", bbc_index, "--k", "10000", "--where", "topic=business")
    assert r.exit_code == 0, r.output
    assert 0 < len(out["results"]) <= 24 and all(x["fields"]["topic"] == "business" for x in out["results"])
    r, out = search("economy", "--index", bbc_index, "--k", "50", "--where", "topic=business", "--where", "topic=tech", "--method", "bm25")
    assert {x["fields"]["topic"] for x in out["results"]} <= {"business", "tech"}


def test_like_excludes_the_document_and_finds_its_neighbours(bbc_index):
    _, out = search("the", "--index", bbc_index, "--k", "1", "--where", "topic=sports", "--method", "bm25")
    doc = out["results"][0]["id"]
    r, out = search("--index", bbc_index, "--k", "10", "--like", doc)
    assert r.exit_code == 0, r.output
    ids = [x["id"] for x in out["results"]]
    assert doc not in ids and len(ids) == 10
    assert sum(x["fields"]["topic"] == "sports" for x in out["results"]) >= 4  # chance: 2 in 10


@pytest.mark.parametrize("args,msg", [
    (["", "--k", "3"], "empty query"),
    (["x", "--k", "0"], "--k: Input should be greater than or equal to 1"),
    (["x", "--k", "10001"], "--k: Input should be less than or equal to 10000"),
    (["x", "--offset", "9995", "--k", "10"], "offset + k <= 10000"),
    (["x", "--method", "magic"], "Invalid value for '--method'"),
    (["x", "--where", "novalue"], "malformed --where"),
    (["x", "--where", "=x"], "malformed --where"),
    (["x", "--like", "no-such-doc"], "no document"),
    (["x", "--method", "dense", "--length-neutral"], "--length-neutral works with method sae"),
])
def test_bad_input_is_a_one_line_error(bbc_index, args, msg):
    r = cli("search", *args, "--index", bbc_index)
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


def test_llm_paths_without_llm_say_what_to_set(bbc_index):
    for flag in ("--rerank", "--llm-filter"):
        r = cli("search", "football", "--index", bbc_index, flag)
        assert r.exit_code == 2 and "needs an LLM" in r.output and "OPENAI_BASE_URL" in r.output


@pytest.fixture
def llm_stub(monkeypatch):
    from tests.llm_stub import LLMStub

    stub = LLMStub(keyword="year", fail_first=1)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("SAEDEX_LLM_MODEL", "stub-model")
    yield stub
    stub.close()


def test_llm_rerank_filter_and_expand(bbc_index, llm_stub):
    r, out = search("sport", "--index", bbc_index, "--k", "20", "--rerank")
    assert r.exit_code == 0, r.output
    texts = [x["text"][:500].lower() for x in out["results"]]  # the reranker sees the first 500 characters
    n_kw = sum("year" in t for t in texts)
    assert 0 < n_kw < 20 and all("year" in t for t in texts[:n_kw])  # the stub scores docs with the keyword 10
    assert out["rerank"]["reranked"] == 20 and out["rerank"]["usage"]["calls"] >= 2
    own = ("--feedback", "0", "--meaning-weight", "0")  # the query's own latents, nothing added after the filter
    _, plain = search("sport", "--index", bbc_index, "--k", "5", *own)
    _, filt = search("sport", "--index", bbc_index, "--k", "5", "--llm-filter", *own)
    assert 0 < len(filt["latents"]) < len(plain["latents"])
    assert {l["latent"] for l in filt["latents"]} < {l["latent"] for l in plain["latents"]}
    _, plain = search("sport", "--index", bbc_index, "--k", "5")
    _, exp = search("sport", "--index", bbc_index, "--k", "5", "--expand", "3")
    assert len({l["latent"] for l in exp["latents"]} - {l["latent"] for l in plain["latents"]}) > 0


def latents_where(index: str, keep, n: int) -> list[dict]:
    """The first ``n`` latents (by document frequency) that ``keep`` accepts, page by page (a
    page holds at most 200), reading no further pages than it needs."""
    out, offset = [], 0
    while offset is not None and len(out) < n:
        page = json.loads(cli("latents", "--index", index, "--top", "200", "--offset", str(offset), "--json").stdout)
        out += [l for l in page["latents"] if keep(l)]
        offset = page["next_offset"]
    return out[:n]


def test_llm_labelling_is_cached(bbc_index, llm_stub):
    top = latents_where(bbc_index, lambda l: l["doc_count"] >= 3 and l["doc_freq"] < 0.5, 12)
    only = ",".join(str(l["id"]) for l in top)
    r = cli("label", "--index", bbc_index, "--llm", "stub-model", "--only", only, "--min-docs", "1", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["labelled"] > 0 and first["failed"] == 0 and first["usage"]["total_tokens"] > 0
    n_requests = len(llm_stub.requests)
    r = cli("label", "--index", bbc_index, "--llm", "stub-model", "--only", only, "--min-docs", "1", "--json")
    second = json.loads(r.stdout)
    assert second["labelled"] == 0 and second["cached"] == first["labelled"] and len(llm_stub.requests) == n_requests
    labels = [json.loads(cli("latent", i, "--index", bbc_index, "--json").stdout)["label"] for i in only.split(",")]
    assert sum(label.startswith("stub label") for label in labels) == first["labelled"] == 12
    prompt = next(m for m in llm_stub.requests if "messages" in m)["messages"][-1]["content"]
    assert "<<" in prompt and "Non-activating examples" in prompt


def test_eval_retrieval_reports_every_method(bbc_index, tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"name": "sport", "query": "sports news", "rule": {"field": "topic", "equals": "sports"}}) + "\n")
    r = cli("eval-retrieval", "--index", bbc_index, "--queries", str(q), "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert set(res["summary"]) == {"sae", "bm25", "dense", "hybrid"}
    row = res["queries"][0]
    assert row["relevant"] == 24 and row["pool"] == 120
    for m in res["summary"]:
        assert 0 <= row["methods"][m]["ap"] <= 1
    # --length-neutral ranks the sae method only: the other methods' APs do not move
    r = cli("eval-retrieval", "--index", bbc_index, "--queries", str(q), "--methods", "sae,dense", "--length-neutral", "--json")
    neutral = json.loads(r.stdout)["queries"][0]["methods"]
    assert neutral["dense"] == row["methods"]["dense"] and 0 <= neutral["sae"]["ap"] <= 1
    # --meaning-weight 0 turns the sae method's meaning term off (README); a negative weight is refused
    r = cli("eval-retrieval", "--index", bbc_index, "--queries", str(q), "--methods", "sae,dense", "--meaning-weight", "0", "--json")
    plain = json.loads(r.stdout)["queries"][0]["methods"]
    assert plain["dense"] == row["methods"]["dense"] and 0 <= plain["sae"]["ap"] <= 1
    r = cli("eval-retrieval", "--index", bbc_index, "--queries", str(q), "--meaning-weight", "-1")
    assert r.exit_code == 2 and "meaning-weight" in r.output


def test_average_precision():
    from search.evaluate import average_precision, precision_at

    assert average_precision(["a", "x", "b"], {"a", "b"}) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(["x"], {"a"}) == 0.0
    assert precision_at(["a", "x"], {"a"}, 2) == 0.5


def test_concept_share_splits_the_query_weight_between_families(bbc_index):
    """With a concept share each family is ranked on its own: share 0 leaves the concept family no
    weight, 1 the token family none, and 0.5 gives both the same rank weights."""
    from indexer.store import open_store
    from search.engine import SearchEngine, SearchOptions

    store = open_store(bbc_index)
    try:
        eng = SearchEngine(store, bbc_index)
        table = eng.table()
        concept = {int(i) for i, c in zip(table.ids, table.concept) if c}

        def weights(share):
            ws = eng.query_latents("football match results", SearchOptions(concept_share=share, n_latents=20))
            return {w.latent: w.weight for w in ws}

        half = weights(0.5)
        token_w = sorted((w for i, w in half.items() if i not in concept), reverse=True)
        concept_w = sorted((w for i, w in half.items() if i in concept), reverse=True)
        assert len(token_w) == 20 and len(concept_w) == 20 and token_w == pytest.approx(concept_w)
        assert set(weights(0.0)) <= set(half) and not set(weights(0.0)) & concept
        assert set(weights(1.0)) <= concept
        r = cli("search", "football match results", "--index", bbc_index, "--k", "5", "--json")
        assert r.exit_code == 0 and json.loads(r.output)["results"], r.output
    finally:
        store.close()


def test_ranking_families_together_equals_ranking_each_alone(bbc_index):
    """Search ranks each family on its own (the default concept share) from one similarity pass
    (``latents_by_family``); each family's ranking must be exactly the one it gets alone, scores
    included, whatever the query - and the default must split the families."""
    from indexer.store import open_store
    from search.engine import SearchOptions
    from search.latents import latents_by_family, latents_for_query

    assert SearchOptions().concept_share is not None
    store = open_store(bbc_index)
    try:
        for query in ("football match results", "a joke about ugly people", "negative review", "the economy is growing",
                      "someone apologising", "x"):
            both = latents_by_family(store, query, 60, {"token": 0.0, "concept": 0.0})
            for family in ("token", "concept"):
                alone = latents_for_query(store, query, 60, family=family)
                assert both[family] == alone and alone, (query, family)
    finally:
        store.close()


def test_a_query_never_asks_for_latents_named_by_the_opposite_of_its_words(bbc_index):
    """Embedders put a word beside its opposite; WordNet's antonyms keep a query for "bad" from
    asking for latents labelled "good" (every latent is ranked here, so without the rule they
    would all be among them)."""
    import re

    from indexer.labels.dictionary.vocabulary import antonyms
    from indexer.store import open_store
    from indexer.store.latent_table import latent_table
    from search.latents import latents_for_query

    if not antonyms("bad"):
        pytest.skip("WordNet (Debian wordnet-base) is not installed")
    assert "positive" in antonyms("negative") and "criticize" in antonyms("praise") and "good" in antonyms("bad")
    with open_store(bbc_index) as store:
        table = latent_table(store)
        words = {int(i): set(re.findall(r"[a-z]+", (l or "").lower())) for i, l in zip(table.ids, table.labels)}
        good = {i for i, w in words.items() if "good" in w}
        bad = {i for i, w in words.items() if "bad" in w and "good" not in w}
        assert good, "the index must hold a latent labelled 'good' for this test to mean anything"
        ranked = {i for i, _ in latents_for_query(store, "bad news", top=table.size)}
        assert not ranked & good and len(ranked) >= table.size - len(good) - 5
        assert bad <= ranked
        assert good & {i for i, _ in latents_for_query(store, "good news", top=table.size)}


def test_unclear_concept_latents_count_less_in_a_query_than_named_ones(bbc_index, monkeypatch):
    """A concept latent labelled "unclear" keeps a near-miss name for its label vector; a query
    meets it at UNCLEAR_WEIGHT of the score it would have as a named latent, never more."""
    import numpy as np

    import search.latents as latents
    from indexer.store import open_store
    from indexer.store.latent_table import latent_table

    with open_store(bbc_index) as store:
        table = latent_table(store)
        unclear = {int(i) for i, k in zip(table.ids, table.kinds) if k in ("unclear", "form")}
        if not unclear:
            pytest.skip("this index's concept labels are all named")
        query = "people talking about their plans"
        weight = latents.UNCLEAR_WEIGHT
        assert 0 <= weight < 1
        lowered = dict(latents.latents_for_query(store, query, top=table.size))
        monkeypatch.setattr(latents, "UNCLEAR_WEIGHT", 1.0)
        plain = dict(latents.latents_for_query(store, query, top=table.size))
    assert set(lowered) == set(plain)
    for i in unclear & set(plain):
        assert np.isclose(lowered[i], plain[i] - (1 - weight) * abs(plain[i]), atol=1e-9)
    named = set(plain) - unclear
    assert all(lowered[i] == plain[i] for i in named)


def test_length_neutral_scores_are_plain_scores_minus_their_length_strata_means(tmp_path, monkeypatch):
    """On a columnar copy of documents whose activations grow with their length (as max-pooling
    makes them): every score is the plain score minus its stratum's mean plain score over *all*
    the stratum's documents, the ranking is by that, and a filter or a latent no document has is
    honoured. Brute force here, from the same arrays by another path."""
    import numpy as np

    from indexer.store import Filter
    from indexer.store.columns import ColumnCopy, bucket_strata, length_bucket
    from search import length_neutral
    from search.length_neutral import length_baseline, rank_length_neutral

    rng = np.random.default_rng(0)
    d, n = 50, 400
    tokens = np.round(np.exp(rng.uniform(np.log(8), np.log(4000), n))).astype(int)
    dense = (rng.random((n, d)) < 0.1 + 0.5 * (np.log(tokens) / np.log(4000))[:, None]) * rng.gamma(2.0, 1.0 + np.log(tokens)[:, None] / 4, (n, d))
    dense[:, 7] = 0.0  # a latent that fires nowhere
    copy = ColumnCopy(tmp_path / "columns", d)
    copy.initialise()
    for part in np.array_split(np.arange(n), 3):  # three shards
        rows = [np.flatnonzero(dense[i]) for i in part]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        copy.append([f"d{i}" for i in part], indptr, np.concatenate(rows), np.concatenate([dense[i, r] for i, r in zip(part, rows)]).astype(np.float32),
                    [{"n_tokens": int(tokens[i]), "side": "ab"[i % 2]} for i in part], merge=False)
    base = length_baseline(copy)
    latents, weights = [3, 11, 7, 40], [0.5, 0.3, 0.15, 0.05]
    q = np.zeros(d)
    q[latents] = weights
    plain = dense.astype(np.float32).astype(np.float64) @ q
    stratum = bucket_strata([tokens.astype(float)], 10)[length_bucket(tokens)]
    assert len(set(stratum.tolist())) == 10
    expect = plain - np.array([plain[stratum == s].mean() for s in stratum])
    for flt, keep in ((None, np.ones(n, bool)), (Filter({"side": "b"}), np.arange(n) % 2 == 1)):
        got = rank_length_neutral(copy, base, flt, latents, weights, 1000)
        keep = keep & (plain > 0)
        assert len(got) == keep.sum()
        ids = [int(x[1:]) for x, _, _ in got]
        assert np.allclose([s for _, s, _ in got], expect[ids], atol=1e-9)
        assert np.allclose([s + b for _, s, b in got], plain[ids], atol=1e-9)  # score + baseline = the plain score
        assert set(ids) == set(np.flatnonzero(keep).tolist())
        assert all(a >= b for a, b in zip(expect[ids], expect[ids][1:]))
    # long documents lead the plain ranking and not the length-neutral one
    top_plain = np.argsort(-plain)[:40]
    top_neutral = [int(x[1:]) for x, _, _ in rank_length_neutral(copy, base, None, latents, weights, 40)]
    assert np.median(tokens[top_neutral]) < 0.75 * np.median(tokens[top_plain])  # 434 vs 792 tokens
    # read in blocks of a few rows (as a large shard is), the baseline and the ranking are the same
    monkeypatch.setattr(length_neutral, "BLOCK", 7)
    assert np.allclose(length_baseline(copy).mean, base.mean, rtol=1e-12, atol=1e-12)
    assert [int(x[1:]) for x, _, _ in rank_length_neutral(copy, base, None, latents, weights, 40)] == top_neutral


def test_length_neutral_search_end_to_end(bbc_index):
    """``--length-neutral`` through the CLI: hits come with explanations, scores equal the plain
    SAE score of each hit (from Qdrant's own vectors) minus its stratum's mean, and the page is
    ranked by them."""
    import numpy as np

    from indexer.store import open_store
    from indexer.store.columns import bucket_strata, length_bucket

    args = ("search", "football match", "--index", bbc_index, "--k", "10", "--feedback", "0", "--json")
    plain, neutral = (json.loads(cli(*args, *extra).stdout) for extra in ((), ("--length-neutral",)))
    assert plain["latents"] == neutral["latents"] and neutral["results"]
    assert all(h["explanation"] for h in neutral["results"])
    scores = [h["score"] for h in neutral["results"]]
    assert scores == sorted(scores, reverse=True)
    w = {x["latent"]: x["weight"] / x["p90"] for x in neutral["latents"]}
    with open_store(bbc_index) as store:
        docs = [h for b in store.scroll_docs(with_sparse=True, payload_fields=["doc_id", "n_tokens"]) for h in b]
    raw = {h.doc_id: sum(w.get(i, 0.0) * a for i, a in h.sparse.items()) for h in docs}
    tokens = np.array([h.payload["n_tokens"] for h in docs], float)
    stratum = dict(zip((h.doc_id for h in docs), bucket_strata([tokens], 10)[length_bucket(tokens)].tolist()))
    mean = {s: np.mean([raw[d] for d in raw if stratum[d] == s]) for s in set(stratum.values())}
    for h in neutral["results"]:
        assert abs(h["score"] - (raw[h["id"]] - mean[stratum[h["id"]]])) < 1e-3 * max(1.0, abs(raw[h["id"]]))
        assert abs(h["length_baseline"] - mean[stratum[h["id"]]]) < 1e-3 * max(1.0, abs(raw[h["id"]]))  # shown with each hit
    assert all("length_baseline" not in h for h in plain["results"])


def test_meaning_terms_pick_the_best_aligned_directions_in_either_sign():
    """The concept latents whose decoder rows align most with the query, by |q . d|, each with
    scale x (q . d): a direction pointing away from the query counts (negatively), not only towards."""
    import numpy as np

    from search.meaning import ConceptDirections, meaning_terms

    rows = np.array([[1, 0], [0.1, 0], [-0.9, 0], [0, 1], [0.5, 0]], np.float32)
    d = ConceptDirections(ids=np.arange(100, 105), rows=rows)
    ids, coef = meaning_terms(d, np.array([1.0, 0.0]), 3, scale=2.0)
    assert ids.tolist() == [100, 102, 104] and coef.tolist() == pytest.approx([2.0, -1.8, 1.0])
    ids, _ = meaning_terms(d, np.array([1.0, 0.0]), 50, scale=1.0)
    assert sorted(ids.tolist()) == list(range(100, 105))


def test_meaning_term_needs_a_concept_family_in_the_query_space():
    """No concept family (an index of the token family only), or one whose SAE reads another
    embedder's space (mpnet's rows against a MiniLM query), gives no decoder rows: the term is off.
    The shipped MiniLM family's rows come with the index's latent ids (after the token SAE's)."""
    import dataclasses

    from indexer.encode.recipe import Recipe, SaeRecipe
    from indexer.encode.sae import load_sae, sae_dir
    from search.meaning import concept_directions

    token_only = Recipe.external(d_sae=16384)
    assert concept_directions(token_only) is None
    mini, mpnet = (load_sae(sae_dir(n, "concept")) for n in ("default", "mpnet"))
    got = concept_directions(dataclasses.replace(token_only, concept=SaeRecipe.of(mini, "default")))
    assert got is not None and got.ids[0] == 16384 and got.rows.shape == (mini.d_sae, 384)
    assert concept_directions(dataclasses.replace(token_only, concept=SaeRecipe.of(mpnet, "mpnet"))) is None
    other = dataclasses.replace(SaeRecipe.of(mini, "default"), hash="0" * 16)  # not the SAE the index was built with
    assert concept_directions(dataclasses.replace(token_only, concept=other)) is None


def test_meaning_term_adds_the_query_decomposed_over_concept_latents(bbc_index):
    """Method sae adds, to each of the concept latents best aligned with the query, meaning_weight x
    the label weights' total x (q . d_i) per unit of activation (d_i its decoder row); hits are
    scored by Qdrant with exactly those coefficients. Hybrid, the token family and weight 0 add none."""
    import numpy as np

    from indexer.encode.embedder import get_embedder
    from indexer.encode.sae import shipped_concept_sae
    from indexer.store import open_store
    from search.engine import SearchEngine, SearchOptions

    query = "a gloomy, pessimistic outlook"
    store = open_store(bbc_index)
    try:
        eng = SearchEngine(store, bbc_index)
        d_token = eng.manifest.recipe.sae.d_sae
        decoder = shipped_concept_sae().W_dec.float().numpy()
        q = get_embedder().encode_query(query)
        opts = dict(k=30, feedback=0)
        plain = eng.search(query, SearchOptions(meaning_weight=0, **opts))
        with_m = eng.search(query, SearchOptions(meaning_weight=0.5, meaning_latents=40, **opts))
        assert not any("meaning" in x for x in plain["latents"])
        terms = [x for x in with_m["latents"] if "meaning" in x]
        assert 20 <= len(terms) <= 40 and all(x["latent"] >= d_token for x in terms)
        assert any(x["meaning"] < 0 for x in terms) and any(x["meaning"] > 0 for x in terms)
        total = sum(x["weight"] for x in plain["latents"])
        dots = decoder @ q
        best = set((d_token + np.argsort(-np.abs(dots))[:40]).tolist())
        assert {x["latent"] for x in terms} <= best
        for x in terms:  # coefficient per unit of activation = 0.5 x total x (q . d)
            assert x["meaning"] / x["p90"] == pytest.approx(0.5 * total * dots[x["latent"] - d_token], rel=1e-3, abs=1e-6)
        label_w = {x["latent"]: x["weight"] for x in plain["latents"]}
        for x in with_m["latents"]:  # the label-matched part is unchanged
            assert x["weight"] - x.get("meaning", 0.0) == pytest.approx(label_w.get(x["latent"], 0.0), abs=1e-4)
        coef = {x["latent"]: x["weight"] / x["p90"] for x in with_m["latents"]}
        vecs = {d.doc_id: d.sparse for d in store.get_docs([h["id"] for h in with_m["results"]], with_sparse=True)}
        for h in with_m["results"]:  # Qdrant scored with exactly these coefficients
            assert h["score"] == pytest.approx(sum(coef.get(i, 0.0) * a for i, a in vecs[h["id"]].items()), rel=1e-3, abs=1e-5)
        against = [e for h in with_m["results"] for e in h.get("against", [])]
        assert against and all(e["contribution"] < 0 and e["meaning"] < 0 and e["activation"] > 0 for e in against)
        assert all(e["contribution"] > 0 for h in with_m["results"] for e in h["explanation"])
        assert not any("against" in h for h in plain["results"])  # only the meaning term counts against a document
        before = {h["id"]: h["score"] for h in plain["results"]}
        assert any(abs(h["score"] - before[h["id"]]) > 1e-4 for h in with_m["results"] if h["id"] in before)
        for extra in (dict(method="hybrid"), dict(family="token")):
            out = eng.search(query, SearchOptions(meaning_weight=0.5, **opts, **extra))
            assert not any("meaning" in x for x in out["latents"]), extra
    finally:
        store.close()
    r = cli("search", query, "--index", bbc_index, "--k", "5", "--meaning-weight", "0", "--json")  # the CLI flag (store closed)
    assert r.exit_code == 0 and not any("meaning" in x for x in json.loads(r.stdout)["latents"]), r.output


def test_every_latent_a_command_reports_names_its_family(bbc_index):
    """Search latents, their explanations, diff and correlation entries each say which SAE family
    a latent belongs to (its id range decides: token ids first, then concept ids)."""
    from indexer.encode.recipe import read_manifest
    from indexer.store import open_store

    store = open_store(bbc_index)
    try:
        recipe = read_manifest(store, bbc_index).recipe
    finally:
        store.close()
    _, out = search("football match results", "--index", bbc_index, "--k", "3")
    fams = {l["family"] for l in out["latents"]}
    assert fams == {"token", "concept"}
    assert all(l["family"] == recipe.family_of(l["latent"]) for l in out["latents"])
    assert all(e["family"] == recipe.family_of(e["latent"]) for r in out["results"] for e in r["explanation"])
    assert any(r["explanation"] for r in out["results"])
    r = cli("diff", "--index", bbc_index, "--a", "topic=sports", "--b", "topic=business", "--top", "10", "--json")
    assert r.exit_code == 0, r.output
    lats = json.loads(r.output)["latents"]
    assert lats and all(l["family"] == recipe.family_of(l["latent"]) for l in lats)
    r = cli("correlations", "--index", bbc_index, "--min-support", "3", "--json")
    assert r.exit_code == 0, r.output
    pairs = json.loads(r.output)["pairs"]
    assert pairs and all(p["family_a"] == recipe.family_of(p["a"]) and p["family_b"] == recipe.family_of(p["b"]) for p in pairs)
