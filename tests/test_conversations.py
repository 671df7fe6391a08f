"""Two views per record (prompt -> response): the paper's flagship case as a cross-view correlation,
conditioned diffs, the views through export/import and --update, the API and the page.

The pool (``benchmarks/conversations.py``): 300 synthetic chat records, 10% arithmetic word
problems whose answers, and only those, end with " I hope it is correct."; the 2% case is the slice
``low=true`` of the same pool (every other record and 6 math ones)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from benchmarks.conversations import CLOSING, pair_rank, two_rate_pool
from tests.conftest import cli, write_jsonl

INDEX = "conv"


@pytest.fixture(scope="module")
def conv(indexer_obj, tmp_path_factory):
    from indexer.ingest.pipeline import index_corpus

    rows = two_rate_pool(300)
    rows.append({"id": "solo", "response": "A record that answers no prompt at all.", "kind": "solo"})
    path = write_jsonl(tmp_path_factory.mktemp("conv") / "conv.jsonl", rows)
    rep = index_corpus(path, INDEX, text_field="response", prompt_field="prompt", id_field="id", indexer=indexer_obj,
                       progress=False)
    assert rep.indexed == 301 and rep.prompts == 300
    return {r["id"]: r for r in rows}, path


def _correlations(where=None, between="prompt,response", top=20):
    from analyses.correlations import correlations
    from analyses.params import CorrelationsParams
    from indexer.store import open_store

    with open_store(INDEX) as store:
        return correlations(store, INDEX, CorrelationsParams(between=between, where=where or {}, top=top))


def test_math_prompts_and_the_closing_phrase_top_the_cross_view_pairs(conv):
    rows, _ = conv
    ten = _correlations()
    assert ten["between"] == "prompt,response" and ten["documents"] >= 250  # records with both views, each text once
    rank = pair_rank(ten, rows)
    assert rank is not None and rank <= 3, [(p["label_a"], p["label_b"], p["npmi"], p["count"]) for p in ten["pairs"][:5]]
    p = ten["pairs"][rank - 1]
    ex = p["example"]  # both texts of the record, each marked where its latent fires
    assert ex["a"]["view"] == "prompt" and ex["b"]["view"] == "response" and ex["a"]["text"] and ex["a"]["mark"]
    assert ex["b"]["text"].endswith(CLOSING.strip()) and p["count"] >= 25
    # 2% (6 math records of ~290): the pair is found at NPMI 1.0, but templated chat (a question about
    # pets, answers about cats and goldfish) ties it at 1.0 with more support, so it lands below those
    # pairs (the README says where, at 2% of a larger pool)
    two = _correlations({"low": True}, top=500)
    rank2 = pair_rank(two, rows)
    assert rank2 is not None and two["pairs"][rank2 - 1]["npmi"] >= 0.95, [(p["label_a"], p["label_b"], p["npmi"], p["count"])
                                                                          for p in two["pairs"][:5]]
    print(f"2%: the (math prompt, closing phrase) pair ranks {rank2} of {len(two['pairs'])}")
    # within responses alone the phrase's pairs say nothing about prompts: no pair names a prompt
    within = _correlations(between="response,response", top=5)
    assert within["pairs"] and all("view_a" not in q and "a" in q["example"] for q in within["pairs"])


def test_a_conditioned_diff_finds_the_phrase_in_answers_to_math_prompts(conv):
    """diff --view response between records whose prompt has the math latent and those whose prompt has not."""
    from analyses.diff import diff
    from analyses.params import DiffParams
    from indexer.store import open_store

    rows, _ = conv
    pair = _correlations()["pairs"][pair_rank(_correlations(), rows) - 1]
    with open_store(INDEX) as store:
        res = diff(store, INDEX, DiffParams(a={"prompt-latent": pair["a"]}, b={"no-prompt-latent": pair["a"]}, top=10,
                                            length="none"))
        assert res["n_a"] >= 25 and res["n_a"] + res["n_b"] == 300  # records with a prompt only
        top_a = [r for r in res["latents"] if r["more_in"] == "a"][:5]
        assert any(r["example"]["mark"] and r["example"]["text"][slice(*r["example"]["mark"])].strip(" .").lower()
                   in CLOSING.lower() for r in top_a), [(r["label"], r["example"]) for r in top_a]
        prompts = diff(store, INDEX, DiffParams(a={"kind": "math"}, b={"kind": ["chat", "howto", "facts"]}, view="prompt",
                                                top=5, length="none"))
        assert prompts["view"] == "prompt" and prompts["n_a"] == 30 and "solo" not in str(prompts["n_b"])
        assert rows[prompts["latents"][0]["example"]["doc_id"]]["kind"] in ("math", "chat", "howto", "facts")


def test_search_latents_and_document_read_either_view(conv):
    from indexer.store import open_store
    from search.engine import SearchEngine, SearchOptions
    from search.latents import LatentsParams, list_latents

    rows, _ = conv
    with open_store(INDEX) as store:
        eng = SearchEngine(store, INDEX)
        out = eng.search("how many apples in total", SearchOptions(query="how many apples in total", k=5, view="prompt"))
        assert out["results"] and all(r["view"] == "prompt" and "prompt" in r for r in out["results"])
        top = out["results"][0]
        spans = [s for e in top["explanation"] for s in e["spans"]]
        assert spans and all(e <= len(top["prompt"]) for _, e in spans)  # the marks point into the prompt
        doc = eng.document("r000001")
        assert doc["prompt"] == rows["r000001"]["prompt"] and doc["prompt_latents"] and doc["latents"]
        solo = eng.document("solo")
        assert "prompt" not in solo
        lat = list_latents(store, INDEX, LatentsParams(view="prompt", top=5))
        assert lat["texts"] == 300 and all(0 < x["view_doc_freq"] <= 1 for x in lat["latents"])


def test_views_survive_export_import_and_update(conv, tmp_path):
    from indexer.ingest.interchange import export_parquet, import_parquet
    from indexer.ingest.pipeline import index_corpus
    from indexer.encode.recipe import read_manifest
    from indexer.store import open_store

    rows, path = conv
    out = tmp_path / "conv.parquet"
    with open_store(INDEX) as store:
        export_parquet(store, read_manifest(store), out, progress=False)
    rep = import_parquet(out, "conv_copy", progress=False, refresh=False)  # the vectors are what travels
    assert rep.indexed == 301
    ids = ["r000001", "r000002", "solo"]
    with open_store(INDEX) as a, open_store("conv_copy") as b:
        for view in ("response", "prompt"):
            va = {h.doc_id: dict(h.sparse or {}) for h in a.get_docs(ids, with_sparse=True, view=view)}
            vb = {h.doc_id: dict(h.sparse or {}) for h in b.get_docs(ids, with_sparse=True, view=view)}
            assert va == vb and (view == "response" or va["solo"] == {})
        assert read_manifest(b).state.two_view
    # --update: a record whose prompt changed is re-encoded, its prompt vector replaced
    changed = dict(rows["r000002"], prompt="Could you tell me a joke about penguins?")
    upd = write_jsonl(tmp_path / "upd.jsonl", [changed])
    rep = index_corpus(upd, "conv_copy", text_field="response", prompt_field="prompt", id_field="id", progress=False, update=True,
                       refresh_latents=False)
    assert rep.changed == 1 and rep.updated == 1
    with open_store("conv_copy") as b:
        doc = b.get_docs(["r000002"])[0]
        assert doc.payload["_prompt"] == changed["prompt"]
    shutil.rmtree(os.path.join(os.environ["SAEDEX_HOME"], "indexes", "conv_copy"), ignore_errors=True)


def test_prompt_views_refused_where_they_cannot_be(conv, bbc_index, tmp_path):
    r = cli("correlations", "--index", bbc_index, "--between", "prompt,response")
    assert r.exit_code != 0 and "has no prompts" in r.output and "Traceback" not in r.output
    r = cli("correlations", "--index", INDEX, "--between", "prompt,answer")
    assert r.exit_code != 0 and "between" in r.output
    r = cli("diff", "--index", INDEX, "--a", "prompt-latent=abc", "--b", "kind=chat")
    assert r.exit_code != 0 and "latent ids" in r.output
    r = cli("search", "x", "--index", INDEX, "--view", "prompt", "--method", "dense")
    assert r.exit_code != 0 and "method sae" in r.output


def test_api_cross_view_correlations_and_prompt_search(conv):
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.auth import ApiKey, digest

    rows, _ = conv
    app = create_app(keys=[ApiKey("admin", digest("conv-key-1"))], rate_limit=0)
    auth = {"Authorization": "Bearer conv-key-1"}
    try:
        with TestClient(app) as c:
            r = c.post(f"/v1/indexes/{INDEX}/correlations?wait=60", json={"between": "prompt,response", "top": 10}, headers=auth)
            assert r.status_code == 200 and r.json()["status"] == "done", r.text[:300]
            assert pair_rank(r.json()["result"], rows) <= 3
            s = c.post(f"/v1/indexes/{INDEX}/search", json={"query": "apples", "k": 3, "view": "prompt"}, headers=auth)
            assert s.status_code == 200 and s.json()["results"][0]["prompt"]
            bad = c.post(f"/v1/indexes/{INDEX}/search", json={"query": "apples", "view": "question"}, headers=auth)
            assert bad.status_code == 422 and "view" in bad.text
    finally:
        app.state.jobs.shutdown()
        app.state.registry.close()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Debian chromium not installed (CI installs it)")
def test_page_shows_prompt_and_response_of_a_result(conv):
    """The web page's result card of a two-view record: the prompt above the response, the marks
    in the view that was ranked (here the prompt)."""
    from playwright.sync_api import sync_playwright

    from server.app import create_app
    from server.auth import ApiKey, digest
    from tests.test_server import serving

    app = create_app(keys=[ApiKey("admin", digest("conv-key-2"))], rate_limit=0)
    try:
        with serving(app) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url + "/")
            page.fill("#apikey", "conv-key-2")
            page.dispatch_event("#apikey", "change")
            page.locator("#index option").first.wait_for(state="attached")
            page.select_option("#index", INDEX)
            page.select_option("#view", "prompt")
            page.fill("#q", "how many apples")
            page.click("#go")
            try:
                page.wait_for_selector(".result .prompt mark", timeout=90000)
            except Exception:  # say what the page shows instead
                raise AssertionError(page.inner_text("body")[:2000]) from None
            card = page.locator(".result").first
            assert "prompt:" in card.inner_text() and "response:" in card.inner_text()
            assert card.locator(".prompt mark").count() > 0  # the ranked view carries the marks
            assert card.locator(".text:not(.prompt) mark").count() == 0
            browser.close()
    finally:
        app.state.jobs.shutdown()
        app.state.registry.close()


def test_cross_view_counts_equal_brute_force():
    """npmi_pairs with A (prompt side) counts every (prompt latent, response latent) pair over the same rows."""
    import scipy.sparse as sp

    from analyses.correlations import npmi_pairs

    rng = np.random.default_rng(0)
    A = sp.csr_matrix((rng.random((200, 30)) < 0.2).astype(np.float32))
    B = sp.csr_matrix((rng.random((200, 25)) < 0.2).astype(np.float32))
    i, j, npmi, cij, _ = npmi_pairs(B, 3, -1.0, A=A)
    dense = (A.T @ B).toarray()
    want = {(a, b): dense[a, b] for a in range(30) for b in range(25) if dense[a, b] >= 3}
    assert {(int(a), int(b)): float(c) for a, b, c in zip(i, j, cij)} == want
    pa, pb = A.toarray().mean(0), B.toarray().mean(0)
    k = 0
    pij = cij[k] / 200
    assert np.isclose(npmi[k], np.log(pij / (pa[i[k]] * pb[j[k]])) / -np.log(pij))


@pytest.mark.parametrize("line,msg", [
    ('{"response": "ok", "prompt": 5}', "prompt field 'prompt' must be a string"),
])
def test_prompt_field_validation_names_the_record(tmp_path, line, msg):
    from indexer.ingest.corpus import CorpusError, read_corpus

    p = tmp_path / "bad.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(CorpusError, match=msg):
        list(read_corpus(p, text_field="response", prompt_field="prompt"))
    with pytest.raises(CorpusError, match="both"):
        list(read_corpus(p, text_field="response", prompt_field="response"))
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"response": "a", "prompt": "q"}\n{"response": "a", "prompt": ""}\n{"response": "a"}\n')
    recs = list(read_corpus(ok, text_field="response", prompt_field="prompt"))
    assert [r.prompt for r in recs] == ["q", None, None] and recs[0].id != recs[1].id and recs[1].id == recs[2].id
    assert "prompt" not in recs[0].fields
