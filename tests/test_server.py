"""HTTP API: every endpoint, auth, validation, unknown index, traversal; through FastAPI's test
client and through a real uvicorn on loopback; schemathesis over /openapi.json; the web page in
headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import httpx
import pytest

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
    a = create_app(keys=keys, audit_log=audit_path)
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
    ({"query": "x", "where": {"a": [1, 2]}}, "where"),
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


@pytest.fixture(scope="module")
def live_server(app):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)


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
        page.wait_for_function("document.querySelector('#index').options.length > 0")
        page.select_option("#index", bbc_index)
        page.fill("#q", "football match")
        page.click("#go")
        page.wait_for_selector(".result mark", timeout=60000)
        assert page.locator(".result").count() == 10
        assert page.locator(".result mark").count() > 0
        page.click("#more")  # the next page of results, appended
        page.wait_for_function("document.querySelectorAll('.result').length === 20", timeout=60000)
        with page.expect_download() as dl:
            page.click("#export-csv")
        csv_text = open(dl.value.path(), encoding="utf-8").read()
        assert csv_text.startswith("rank,id,score,dataset") and len(csv_text.strip().splitlines()) >= 21
        with page.expect_download() as dl:
            page.click("#export-json")
        import json as _json
        exported = _json.load(open(dl.value.path(), encoding="utf-8"))
        assert len(exported["results"]) == 20 and exported["request"]["query"] == "football match"
        page.locator(".result .chip").first.click()
        page.wait_for_selector("#latent-page h2", timeout=30000)
        assert "latent" in page.inner_text("#latent-page h2")
        assert page.locator("#latent-page .example mark").count() > 0
        page.click("button[data-view=diff]")
        page.fill("#diff-a", "topic=sports")
        page.fill("#diff-b", "topic=business")
        page.click("#diff-form button[type=submit]")  # an analysis job: submitted, polled, shown
        page.wait_for_selector(".bar-row", timeout=60000)
        assert page.locator(".bar-row").count() == 20
        assert "done" in page.inner_text("#job-status")
        browser.close()


def test_correlations_with_a_huge_top_stay_bounded(client, bbc_index):
    """schemathesis found top=835 with max_label_sim=1e-8 walking 41,750 pairs past a 10 s timeout."""
    import time

    t = time.time()
    r = client.post(f"/v1/indexes/{bbc_index}/correlations?wait=30", headers=AUTH,
                    json={"max_label_sim": 1e-08, "top": 835, "min_npmi": 0.0})
    assert finished(r)["result"]["pairs_examined"] <= 6000
    assert time.time() - t < 10
