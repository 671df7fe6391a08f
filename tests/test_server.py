"""HTTP API: every endpoint, auth, validation, unknown index, traversal; through FastAPI's test
client and through a real uvicorn on loopback; schemathesis over /openapi.json; the web page in
headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import ROOT, write_jsonl

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
# scoped keys (server/auth.py): a search-only key on the test index, an analyses key, a key for another index
SEARCH_KEY, ANALYSES_KEY, OTHER_KEY = "search-only-key-1", "analyses-key-1", "other-index-key-1"


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory):
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def app(bbc_index, audit_path):
    from server.app import create_app
    from server.auth import ApiKey, digest

    keys = [ApiKey("admin", digest(KEY)), ApiKey("reviewer", digest(SEARCH_KEY), "search", frozenset({bbc_index})),
            ApiKey("analyst", digest(ANALYSES_KEY), "analyses"), ApiKey("elsewhere", digest(OTHER_KEY), "admin", frozenset({"other"}))]
    # no per-key rate limit here: schemathesis and the load tests send hundreds of requests a
    # second from one key (the limit has its own test in test_hardening.py)
    a = create_app(keys=keys, audit_log=audit_path, rate_limit=0)
    yield a
    a.state.jobs.shutdown()
    a.state.registry.close()  # release the Qdrant Edge lock for the other test modules


def finished(resp) -> dict:
    """An analysis job's final state (the request asked ?wait=...)."""
    assert resp.status_code == 200, (resp.status_code, resp.text[:300])
    job = resp.json()
    assert job["status"] in ("done", "failed"), job
    return job


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


def test_health_and_auth(client, bbc_index):
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/v1/indexes").status_code == 401
    assert client.get("/v1/indexes", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/indexes", headers={"Authorization": KEY}).status_code == 401
    assert client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "x"}).status_code == 401
    r = client.get("/v1/indexes", headers=AUTH)
    assert r.status_code == 200 and bbc_index in r.json()["indexes"]


def test_info_latents_documents(client, bbc_index):
    info = client.get(f"/v1/indexes/{bbc_index}", headers=AUTH).json()
    assert info["documents"] == 120 and info["datasets"] == {"bbc": 120}
    lat = client.get(f"/v1/indexes/{bbc_index}/latents?top=3", headers=AUTH).json()["latents"]
    assert len(lat) == 3
    q = client.get(f"/v1/indexes/{bbc_index}/latents", params={"query": "money", "top": 4}, headers=AUTH).json()["latents"]
    assert len(q) == 4
    one = client.get(f"/v1/indexes/{bbc_index}/latents/{lat[0]['id']}", headers=AUTH).json()
    assert one["id"] == lat[0]["id"] and one["examples"] and "negatives" in one
    assert client.get(f"/v1/indexes/{bbc_index}/latents/99999999", headers=AUTH).status_code in (404, 422)
    hit = client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "football", "k": 1, "method": "bm25"}, headers=AUTH).json()
    doc_id = hit["results"][0]["id"]
    d = client.get(f"/v1/indexes/{bbc_index}/documents/{doc_id}", headers=AUTH)
    assert d.status_code == 200 and d.json()["latents"] and d.json()["text"]
    assert client.get(f"/v1/indexes/{bbc_index}/documents/nope", headers=AUTH).status_code == 404


def test_search_and_analyses(client, bbc_index):
    r = client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "sports results", "k": 5, "where": {"topic": "sports"}}, headers=AUTH)
    assert r.status_code == 200
    res = r.json()["results"]
    assert len(res) == 5 and all(x["fields"]["topic"] == "sports" for x in res) and res[0]["explanation"]
    for method in ("bm25", "dense", "hybrid"):
        assert client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "oil prices", "k": 3, "method": method}, headers=AUTH).status_code == 200
    neutral = client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "sports results", "k": 5, "length_neutral": True}, headers=AUTH)
    assert neutral.status_code == 200 and neutral.json()["results"][0]["explanation"]  # (on the slow searches' pool)
    assert client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "x", "method": "dense", "length_neutral": True},
                       headers=AUTH).status_code == 422
    labels_only = client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "sports results", "k": 5, "meaning_weight": 0}, headers=AUTH)
    assert labels_only.status_code == 200 and not any("meaning" in x for x in labels_only.json()["latents"])
    assert any("meaning" in x for x in r.json()["latents"])  # the default weighs the query's meaning in
    for bad in (-1, 11, "nan"):
        assert client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "x", "meaning_weight": bad}, headers=AUTH).status_code == 422
    like = client.post(f"/v1/indexes/{bbc_index}/search", json={"like": res[0]["id"], "k": 3}, headers=AUTH)
    assert like.status_code == 200 and res[0]["id"] not in [x["id"] for x in like.json()["results"]]
    d = finished(client.post(f"/v1/indexes/{bbc_index}/diff?wait=60", json={"a": {"topic": "sports"}, "b": {"topic": "business"}, "top": 5}, headers=AUTH))
    assert d["status"] == "done" and len(d["result"]["latents"]) == 5 and d["kind"] == "diff"
    c = finished(client.post(f"/v1/indexes/{bbc_index}/correlations?wait=60", json={"min_support": 3, "top": 5}, headers=AUTH))
    assert "pairs" in c["result"]
    k = finished(client.post(f"/v1/indexes/{bbc_index}/clusters?wait=60", json={"k": 3, "label_field": "topic"}, headers=AUTH))
    assert len(k["result"]["assignments"]) == 120 and "accuracy" in k["result"]["scores"]
    again = client.get(f"/v1/jobs/{k['id']}", headers=AUTH).json()
    assert again["status"] == "done" and again["result"] == k["result"]


@pytest.mark.parametrize("body,field", [
    ({"query": "x", "k": 0}, "k"),
    ({"query": "x", "k": 10001}, "k"),
    ({"query": "x", "method": "magic"}, "method"),
    ({"query": "x" * 2001}, "query"),
    ({"query": "x", "surprise": 1}, "surprise"),
    ({"query": "x", "where": {"a": {"b": 1}}}, "where"),  # values are scalars or lists of scalars
    ({"query": "x", "where": {"a": []}}, "where"),
    ({"query": "x", "k": "5"}, "k"),  # strict JSON types: a string is not an integer
    ({"query": "x", "k": True}, "k"),  # nor is a boolean
    ({"query": "x", "k": 5.0}, "k"),
    ({"query": "x", "offset": -1}, "offset"),
    ({"query": "x", "rerank": "yes"}, "rerank"),
])
def test_validation_names_the_field(client, bbc_index, body, field):
    r = client.post(f"/v1/indexes/{bbc_index}/search", json=body, headers=AUTH)
    assert r.status_code == 422
    assert any(field in e["field"] for e in r.json()["detail"]), r.json()


def test_semantic_errors_are_422_and_unknown_index_404(client, bbc_index):
    r = client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "   "}, headers=AUTH)
    assert r.status_code == 422 and "empty query" in r.json()["detail"]
    r = client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "x", "rerank": True}, headers=AUTH)
    assert r.status_code == 422 and "needs an LLM" in r.json()["detail"]
    job = finished(client.post(f"/v1/indexes/{bbc_index}/diff?wait=60", json={"a": {"topic": "none"}, "b": {"topic": "sports"}}, headers=AUTH))
    assert job["status"] == "failed" and job["error"]["status"] == 422 and "0 document" in job["error"]["detail"]
    job = finished(client.post(f"/v1/indexes/{bbc_index}/clusters?wait=60", json={"k": 3, "label_field": "colour"}, headers=AUTH))
    assert job["status"] == "failed" and job["error"]["status"] == 422
    assert client.get("/v1/indexes/nosuchindex", headers=AUTH).status_code == 404
    assert client.post("/v1/indexes/nosuchindex/search", json={"query": "x"}, headers=AUTH).status_code == 404


@pytest.mark.parametrize("path", ["/v1/indexes/..%2F..%2Fetc", "/v1/indexes/../../etc/passwd", "/v1/indexes/a.b",
                                  "/v1/indexes/%2e%2e", "/v1/indexes/" + "a" * 65, "/v1/indexes/name%00"])
def test_traversal_attempts(client, path):
    r = client.get(path, headers=AUTH)
    assert r.status_code in (404, 422), (path, r.status_code)


def test_body_cap_and_no_trace(client, bbc_index):
    r = client.post(f"/v1/indexes/{bbc_index}/search", content=b'{"query": "' + b"x" * 70000 + b'"}',
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post(f"/v1/indexes/{bbc_index}/search", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def serving(app):
    """``app`` on a real uvicorn server on a free loopback port, for as long as the block runs: its URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)


@pytest.fixture(scope="module")
def live_server(app):
    with serving(app) as url:
        yield url


def test_real_uvicorn_on_loopback(live_server, bbc_index):
    with httpx.Client(base_url=live_server, timeout=60) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/indexes").status_code == 401
        r = c.post(f"/v1/indexes/{bbc_index}/search", json={"query": "elections", "k": 3}, headers=AUTH)
        assert r.status_code == 200 and len(r.json()["results"]) == 3 and r.headers["x-request-id"]
        assert c.get("/v1/indexes/..%2Fetc", headers=AUTH).status_code in (404, 422)
        assert c.get("/openapi.json").status_code == 200
        results = []

        def one(q):
            results.append(c.post(f"/v1/indexes/{bbc_index}/search", json={"query": q, "k": 5}, headers=AUTH).status_code)

        threads = [threading.Thread(target=one, args=(q,)) for q in ["tax", "music", "film", "goal", "phone", "vote"] * 2]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert results == [200] * 12


def test_schemathesis_finds_no_500(app, bbc_index):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for op in schema.get_all_operations():
        operation = op.ok()
        strategy = operation.as_strategy()
        from hypothesis import given

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=strategy)
        def run(case):
            if "name" in (case.path_parameters or {}):
                case.path_parameters["name"] = bbc_index if len(case.path_parameters["name"]) % 2 else case.path_parameters["name"]
            if case.query and "wait" in case.query:
                case.query["wait"] = 0  # a long-poll for a queued job is not a failure; time-outs here are
            resp = case.call(headers=AUTH)
            if resp.status_code >= 500:
                failures.append((operation.label, resp.status_code, resp.text[:200]))

        run()
    assert not failures, failures[:5]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Debian chromium not installed (CI installs it)")
def test_web_page_in_headless_chromium(live_server, bbc_index):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.goto(live_server + "/")
        page.fill("#apikey", KEY)
        page.dispatch_event("#apikey", "change")
        # the key stays in this tab (sessionStorage), never in localStorage
        assert page.evaluate("localStorage.getItem('saedex-key')") is None
        # waits by selector: the page's Content-Security-Policy forbids eval, which Playwright's
        # string predicates (wait_for_function) need; the page's own script runs under it
        page.locator("#index option").first.wait_for(state="attached")
        page.select_option("#index", bbc_index)
        page.fill("#q", "football match")
        page.click("#go")
        page.wait_for_selector(".result mark", timeout=60000)
        assert page.locator(".result").count() == 10
        assert page.locator(".result mark").count() > 0
        assert "topic=" in page.inner_text(".result .meta >> nth=0")  # payload fields on the card
        assert page.locator(".result .against").count() > 0  # latents the query's meaning counts against a hit
        assert page.locator("#query-latents .chip.concept").count() > 0  # concept latents tinted apart from token ones
        assert page.locator("#query-latents .chip:not(.concept)").count() > 0
        assert "concept latent" in page.locator("#query-latents .chip.concept").first.get_attribute("title")
        page.click("#more")  # the next page of results, appended
        page.locator(".result").nth(19).wait_for(timeout=60000)
        with page.expect_download() as dl:
            page.click("#export-csv")
        csv_text = open(dl.value.path(), encoding="utf-8").read()
        assert csv_text.startswith("rank,id,score,dataset") and len(csv_text.strip().splitlines()) >= 21
        with page.expect_download() as dl:
            page.click("#export-json")
        import json as _json
        exported = _json.load(open(dl.value.path(), encoding="utf-8"))
        assert len(exported["results"]) == 20 and exported["request"]["query"] == "football match"
        page.check("#length-neutral")  # the same search, length-neutral: a new list of 10, and its request says so
        page.click("#go")
        page.locator(".result").nth(10).wait_for(state="detached", timeout=60000)
        page.wait_for_selector(".result mark", timeout=60000)
        assert "subtracted" in page.inner_text(".result .meta >> nth=0")  # what the hit's length stratum scores
        with page.expect_download() as dl:
            page.click("#export-json")
        assert _json.load(open(dl.value.path(), encoding="utf-8"))["request"].get("length_neutral") is True
        page.locator(".result .chip").first.click()
        page.wait_for_selector("#latent-page h2", timeout=30000)
        assert "latent" in page.inner_text("#latent-page h2")
        assert page.locator("#latent-page .example mark").count() > 0
        page.click("button[data-view=diff]")
        page.fill("#diff-a", "topic=sports")
        page.fill("#diff-b", "topic=business")
        page.click("#diff-form button[type=submit]")  # an analysis job: submitted, polled, shown
        page.wait_for_selector(".bar-row", timeout=60000)
        assert 5 <= page.locator(".bar-row").count() <= 30  # groups of the top 30 latents, two lists
        assert "done" in page.inner_text("#job-status")
        assert "Compared at equal lengths" in page.inner_text("#diff-chart .summary")
        assert page.locator("#diff-chart h3").count() == 2 and page.locator(".bar-row .example mark").count() > 0
        assert "topic=" in page.inner_text(".bar-row .example .fields >> nth=0")  # the example's payload fields
        browser.close()


def test_correlations_with_a_huge_top_stay_bounded(client, bbc_index):
    """schemathesis found top=835 with max_label_sim=1e-8 walking 41,750 pairs past a 10 s timeout."""
    import time

    t = time.time()
    r = client.post(f"/v1/indexes/{bbc_index}/correlations?wait=30", headers=AUTH,
                    json={"max_label_sim": 1e-08, "top": 835, "min_npmi": 0.0})
    assert finished(r)["result"]["pairs_examined"] <= 6000
    assert time.time() - t < 10


# ----------------------------------------------------------------------------- scopes, audit, holes


def test_key_scopes_roles_and_indexes(client, bbc_index):
    q = {"query": "football", "k": 2}
    assert client.post(f"/v1/indexes/{bbc_index}/search", json=q, headers=bearer(SEARCH_KEY)).status_code == 200
    r = client.post(f"/v1/indexes/{bbc_index}/diff", json={"a": {"topic": "sports"}, "b": {"topic": "tech"}}, headers=bearer(SEARCH_KEY))
    assert r.status_code == 403 and "needs 'analyses'" in r.json()["detail"]  # a search-only key runs no analyses
    assert client.get("/v1/jobs", headers=bearer(SEARCH_KEY)).status_code == 403
    r = client.post(f"/v1/indexes/{bbc_index}/search", json=q, headers=bearer(OTHER_KEY))
    assert r.status_code == 403 and "may not use index" in r.json()["detail"]  # a key for index A on index B
    assert client.get(f"/v1/indexes/{bbc_index}/latents?top=2", headers=bearer(OTHER_KEY)).status_code == 403
    assert bbc_index not in client.get("/v1/indexes", headers=bearer(OTHER_KEY)).json()["indexes"]
    assert bbc_index in client.get("/v1/indexes", headers=bearer(SEARCH_KEY)).json()["indexes"]
    # jobs belong to their key: another analyses key does not see them, admin does
    job = client.post(f"/v1/indexes/{bbc_index}/diff?wait=60", json={"a": {"topic": "sports"}, "b": {"topic": "tech"}, "top": 3},
                      headers=bearer(ANALYSES_KEY)).json()
    assert client.get(f"/v1/jobs/{job['id']}", headers=bearer(ANALYSES_KEY)).status_code == 200
    assert client.get(f"/v1/jobs/{job['id']}", headers=bearer(OTHER_KEY)).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}", headers=AUTH).status_code == 200
    assert job["id"] in [j["id"] for j in client.get("/v1/jobs", headers=bearer(ANALYSES_KEY)).json()["jobs"]]


def test_audit_log_records_who_searched_what(client, bbc_index, audit_path):
    client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "audit me: oil prices", "k": 3}, headers=bearer(SEARCH_KEY))
    client.post(f"/v1/indexes/{bbc_index}/search", json={"query": "x"}, headers={"Authorization": "Bearer not-a-key-at-all"})
    text = audit_path.read_text(encoding="utf-8")
    assert SEARCH_KEY not in text and KEY not in text and "not-a-key-at-all" not in text  # key ids, never keys
    recs = [json.loads(line) for line in text.splitlines()]
    mine = [r for r in recs if r.get("query") == "audit me: oil prices"]
    assert mine and mine[-1]["key_id"] == "reviewer" and mine[-1]["index"] == bbc_index and mine[-1]["results"] == 3
    assert mine[-1]["status"] == 200 and mine[-1]["route"].endswith("/search") and mine[-1]["latency_ms"] > 0 and mine[-1]["time"]
    assert any(r["status"] == 401 and r["key_id"] is None for r in recs)


def test_non_ascii_bearer_is_401_not_500(client, bbc_index):
    for raw in ("Bearer ключ".encode("utf-8"), "Bearer clé".encode("latin-1"), b"Bearer \xff\xfe"):
        r = client.get("/v1/indexes", headers={"Authorization": raw})
        assert r.status_code == 401, raw


def test_numeric_filter_values_never_500(client, bbc_index):
    url = f"/v1/indexes/{bbc_index}/search"
    for value in (1.5, 1e23, -0.0, 10**30, 2**63):
        r = client.post(url, json={"query": "news", "where": {"n_tokens": value}}, headers=AUTH)
        assert r.status_code in (200, 422), (value, r.status_code, r.text[:200])
    r = client.post(url, content=b'{"query": "news", "where": {"n_tokens": NaN}}', headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "finite" in r.text
    r = client.post(url, json={"query": "news", "where": {"n_tokens": 2**70}}, headers=AUTH)
    assert r.status_code == 422 and "64-bit" in r.text
    job = finished(client.post(f"/v1/indexes/{bbc_index}/diff?wait=60", json={"a": {"topic": "sports"}, "b": {"n_tokens": 1.5}}, headers=AUTH))
    assert job["status"] == "failed" and job["error"]["status"] == 422  # B matches nothing: a clear 422, not a 500


def test_diff_with_thousands_of_b_filters_is_refused_at_once(client, bbc_index):
    t = time.time()
    body = {"a": {"topic": "sports"}, "b": [{"topic": f"t{i}"} for i in range(3000)]}
    r = client.post(f"/v1/indexes/{bbc_index}/diff", json=body, headers=AUTH)
    assert r.status_code in (413, 422) and time.time() - t < 2  # was 104 s and +1.8 GB
    body = {"a": {"topic": "sports"}, "b": [{"topic": f"t{i}"} for i in range(40)]}
    r = client.post(f"/v1/indexes/{bbc_index}/diff", json=body, headers=AUTH)
    assert r.status_code == 422 and any(e["field"] == "b" for e in r.json()["detail"])


def test_docs_off_by_default_and_openapi_served(client):
    assert client.get("/docs").status_code == 404  # Swagger UI would load its assets from a CDN
    assert client.get("/openapi.json").status_code == 200


def test_pagination_pages_are_slices_of_one_ranking(client, bbc_index):
    url = f"/v1/indexes/{bbc_index}/search"
    full = client.post(url, json={"query": "elections and voters", "k": 12}, headers=AUTH).json()
    p1 = client.post(url, json={"query": "elections and voters", "k": 6}, headers=AUTH).json()
    p2 = client.post(url, json={"query": "elections and voters", "k": 6, "offset": p1["next_offset"]}, headers=AUTH).json()
    assert p1["next_offset"] == 6 and p2["offset"] == 6
    assert [r["id"] for r in p1["results"] + p2["results"]] == [r["id"] for r in full["results"]]
    last = client.post(url, json={"query": "elections and voters", "k": 50, "offset": 100}, headers=AUTH).json()
    assert len(last["results"]) == 20 and last["next_offset"] is None
    r = client.post(url, json={"query": "x", "k": 10, "offset": 9995}, headers=AUTH)
    assert r.status_code == 422


def test_full_queue_is_429_with_retry_after_and_jobs_cancel(client, app, bbc_index):
    jobs = app.state.jobs
    saved = jobs.per_index
    jobs.per_index = 0
    try:
        r = client.post(f"/v1/indexes/{bbc_index}/correlations", json={}, headers=AUTH)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    finally:
        jobs.per_index = saved
    r = client.post(f"/v1/indexes/{bbc_index}/correlations", json={"min_support": 2, "per_doc": 0}, headers=AUTH)
    assert r.status_code in (200, 202) and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    c = client.delete(f"/v1/jobs/{r.json()['id']}", headers=AUTH)
    assert c.status_code == 200
    final = client.get(f"/v1/jobs/{r.json()['id']}?wait=60", headers=AUTH).json()
    assert final["status"] in ("cancelled", "done")  # cancelled unless it had already finished
    assert client.get("/v1/jobs/" + "0" * 32, headers=AUTH).status_code == 404


def test_healthz_and_searches_are_not_starved_by_analyses(live_server, bbc_index):
    """One long diff plus 45 queued analyses once blocked /healthz for 32.6 s."""
    with httpx.Client(base_url=live_server, timeout=120, headers=AUTH) as c:
        assert c.post(f"/v1/indexes/{bbc_index}/search", json={"query": "warm-up", "k": 5}).status_code == 200
        ids = []
        for i in range(8):  # two keys: one key may hold at most half an index's queue
            r = c.post(f"/v1/indexes/{bbc_index}/correlations", json={"min_support": 2 + i, "per_doc": 0, "floor": 0},
                       headers=AUTH if i % 2 else bearer(ANALYSES_KEY))
            assert r.status_code == 202, r.text[:200]
            ids.append(r.json()["id"])
        assert c.post(f"/v1/indexes/{bbc_index}/correlations", json={}).status_code == 429  # 8 per index
        health, searches = [], []
        for q in ["tax", "music", "film", "goal", "phone"]:
            t = time.perf_counter()
            assert c.get("/healthz").status_code == 200
            health.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert c.post(f"/v1/indexes/{bbc_index}/search", json={"query": q, "k": 5}).status_code == 200
            searches.append(time.perf_counter() - t)
        busy = any(c.get(f"/v1/jobs/{j}").json()["status"] in ("queued", "running") for j in ids)
        for j in ids:
            c.delete(f"/v1/jobs/{j}")
        for j in ids:
            assert c.get(f"/v1/jobs/{j}?wait=60").json()["status"] in ("cancelled", "done")
    assert busy, "the analyses finished before the probes: the test measured nothing"
    assert sorted(health)[len(health) // 2] < 0.05 and max(health) < 0.5, health
    assert max(searches) < 3, searches  # idle: ~0.05 s; benchmarks/api_load.py measures the ratio


def test_chunked_bodies_over_the_cap_on_a_real_server(live_server, bbc_index):
    def chunks(n):
        for _ in range(n):
            yield b"x" * 65536

    with httpx.Client(base_url=live_server, timeout=30) as c:
        t = time.perf_counter()
        r = c.post(f"/v1/indexes/{bbc_index}/search", content=chunks(3200))  # 200 MB, chunked, no key
        assert r.status_code == 401 and time.perf_counter() - t < 10
        r = c.post(f"/v1/indexes/{bbc_index}/search", content=chunks(40), headers=AUTH)  # 2.6 MB, chunked, a key
        assert r.status_code == 413


def test_store_errors_reach_clients_without_paths(client, indexer_obj, tmp_path, saedex_home):
    from indexer.ingest.pipeline import index_corpus

    index_corpus(write_jsonl(tmp_path / "h.jsonl", [{"id": "x", "text": "Held by another process."}]), "held503",
                 dataset="d", id_field="id", indexer=indexer_obj, progress=False)
    code = ("import time; from indexer.store import open_store; s = open_store('held503'); s.get_docs(['x']);"
            " s.get_latents([0]); print('open', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert proc.stdout.readline().strip() == "open"
        r = client.post("/v1/indexes/held503/search", json={"query": "x"}, headers=AUTH)
        assert r.status_code == 503 and "open in another process" in r.json()["detail"]
        assert str(saedex_home) not in r.text and "/tmp" not in r.text and "<path>" in r.text
    finally:
        proc.kill()
        proc.wait()


def test_an_index_dropped_and_recreated_elsewhere_is_never_mixed(client, app, indexer_obj, tmp_path):
    """The server holds a handle (manifest, engine, caches) of an index that another process
    drops, and re-creates with other documents: it must 404 while the index is gone and then
    serve only the new documents, from a new handle. (Qdrant Edge opens shards lazily, and a
    drop is refused once the server has them open; a Qdrant server has no such lock.)"""
    from indexer.ingest.pipeline import index_corpus

    old = [{"id": f"old{i}", "text": t} for i, t in enumerate(["The football club won the cup final.", "Oil prices rose again today."])]
    new = [{"id": f"new{i}", "text": t} for i, t in enumerate(["A new phone was launched by the firm.", "The band released an album.",
                                                               "Parliament voted on the budget."])]

    def drop_elsewhere():
        r = subprocess.run([sys.executable, "-m", "server.cli", "drop", "--index", "regen", "--json"], cwd=ROOT,
                           capture_output=True, text=True, env=os.environ.copy())
        assert r.returncode == 0, r.stderr

    index_corpus(write_jsonl(tmp_path / "old.jsonl", old), "regen", dataset="d", id_field="id", indexer=indexer_obj, progress=False)
    registry = app.state.registry
    registry.RECHECK_S = 0.0
    try:
        first = registry.get("regen")
        drop_elsewhere()
        assert client.post("/v1/indexes/regen/search", json={"query": "football", "k": 5}, headers=AUTH).status_code == 404
        assert "regen" not in registry.handles
        index_corpus(write_jsonl(tmp_path / "old.jsonl", old), "regen", dataset="d", id_field="id", indexer=indexer_obj, progress=False)
        held = registry.get("regen")
        drop_elsewhere()
        index_corpus(write_jsonl(tmp_path / "new.jsonl", new), "regen", dataset="d", id_field="id", indexer=indexer_obj, progress=False)
        for method, query in (("sae", "football"), ("dense", "football"), ("bm25", "phone album")):
            got = client.post("/v1/indexes/regen/search", json={"query": query, "k": 5, "method": method}, headers=AUTH).json()
            assert got["results"] and {x["id"] for x in got["results"]} <= {"new0", "new1", "new2"}, (method, got)
        assert registry.handles["regen"] is not held and held is not first  # re-created: a new handle
    finally:
        registry.RECHECK_S = 1.0
        registry.drop_handle("regen")


def test_searches_with_llm_steps_never_delay_plain_searches(live_server, bbc_index, monkeypatch):
    """Two ``expand`` searches against a stalled endpoint once held both search threads, and a
    plain search waited 7 s behind them; LLM steps now run on a pool of their own."""
    from tests.llm_stub import chat_answer, json_endpoint

    srv = json_endpoint(200, chat_answer('{"examples": []}'), delay=4)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{srv.server_port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("SAEDEX_LLM_MODEL", "stalling-model")
    codes = []
    try:
        with httpx.Client(base_url=live_server, timeout=60, headers=AUTH) as c:
            stalls = [threading.Thread(target=lambda n=n: codes.append(c.post(
                f"/v1/indexes/{bbc_index}/search", json={"query": f"stall {n}", "expand": 3}).status_code)) for n in range(4)]
            [t.start() for t in stalls]
            time.sleep(0.5)
            took = []
            for q in ["tax", "music", "film"]:
                t = time.perf_counter()
                assert c.post(f"/v1/indexes/{bbc_index}/search", json={"query": q, "k": 5}).status_code == 200
                took.append(time.perf_counter() - t)
            [t.join() for t in stalls]
    finally:
        srv.shutdown()
    assert max(took) < 2.0, took  # the stalled endpoint answers after 4 s
    assert sorted(codes) == [200] * 4
