"""The API's security layer without a model: key parsing and scopes, the ASGI guard (auth before
the body, a body cap that chunked uploads cannot bypass), the job queue (bounds, cancellation),
filter values, error scrubbing and cache formats. Each test is a regression test for a hole
found by probing the server as an attacker would."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from server.auth import ApiKey, Authenticator, KeyConfigError, digest, keys_from_env, load_keys


# ----------------------------------------------------------------------------- keys


@pytest.mark.parametrize("value", [" , ", ",", "   ", ""])
def test_a_key_variable_holding_no_key_is_refused_not_read_as_no_auth(value):
    with pytest.raises(KeyConfigError, match="holds no key"):
        keys_from_env(value)


def test_key_entries_are_validated_at_start_up(tmp_path):
    with pytest.raises(KeyConfigError, match="entry 2 is empty"):
        keys_from_env("long-enough-key,,another-key-1")
    with pytest.raises(KeyConfigError, match="at least 8"):
        keys_from_env("short")
    f = tmp_path / "keys.json"
    good = {"keys": [{"id": "alice", "sha256": hashlib.sha256(b"alice-secret-1").hexdigest(), "role": "search", "indexes": ["rt"]},
                     {"id": "bot", "key": "bot-secret-123", "role": "analyses"}]}
    f.write_text(json.dumps(good))
    keys = load_keys("admin-key-12345", f)
    assert [(k.id, k.role, k.indexes) for k in keys] == [("env-1", "admin", None), ("alice", "search", frozenset({"rt"})),
                                                         ("bot", "analyses", None)]
    for bad, msg in [({"keys": [{"id": "x", "key": "k" * 10, "role": "root"}]}, "'role'"),
                     ({"keys": [{"id": "x", "key": "k" * 10, "sha256": "00" * 32}]}, "exactly one"),
                     ({"keys": [{"id": "x", "sha256": "nothex"}]}, "64 lowercase hex"),
                     ({"keys": [{"id": "x", "key": "k" * 10, "indexes": ["../etc"]}]}, "index names"),
                     ({"keys": [{"id": "x", "key": "k" * 10, "colour": "red"}]}, "unknown field"),
                     ({"keys": [{"id": "a", "key": "k" * 10}, {"id": "a", "key": "j" * 10}]}, "duplicate key id"),
                     ({"nokeys": []}, "expected")]:
        f.write_text(json.dumps(bad))
        with pytest.raises(KeyConfigError, match=msg):
            load_keys(None, f)


def test_serve_refuses_a_non_loopback_bind_without_keys(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from server.cli import app

    monkeypatch.delenv("SAEDEX_API_KEYS", raising=False)
    monkeypatch.delenv("SAEDEX_KEYS_FILE", raising=False)
    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "refusing to serve on a non-loopback address without keys" in r.output
    monkeypatch.setenv("SAEDEX_API_KEYS", " , ")
    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "holds no key" in r.output


def test_tokens_are_compared_as_digests_whatever_their_characters():
    auth = Authenticator([ApiKey("a", digest("correct-key-1")), ApiKey("b", digest("other-key-22"), "search", frozenset({"rt"}))])
    assert auth.identify("Bearer correct-key-1").id == "a"
    assert auth.identify("bearer other-key-22").id == "b"
    for header in ("Bearer ключ-не-тот", "Bearer \udcff\x00", "Bearer ", "", "Basic correct-key-1", "correct-key-1", None):
        assert auth.identify(header) is None  # no TypeError from compare_digest on non-ASCII (was a 500)
    b = auth.identify("Bearer other-key-22")
    assert b.may("search") and not b.may("analyses") and b.may_index("rt") and not b.may_index("other")
    assert ApiKey("x", b"", "analyses").may("search") and not ApiKey("x", b"", "analyses").may("admin")


# ----------------------------------------------------------------------------- the ASGI guard


class _Upload:
    """An ASGI ``receive`` that serves a (chunked) body and counts how much of it was read."""

    def __init__(self, chunks: int, size: int):
        self.left, self.size, self.calls = chunks, size, 0

    async def __call__(self):
        self.calls += 1
        if self.left <= 0:
            return {"type": "http.disconnect"}
        self.left -= 1
        return {"type": "http.request", "body": b"x" * self.size, "more_body": self.left > 0}


def _run_guard(headers: dict[str, str], upload: _Upload, max_body: int = 64 * 1024):
    from server.guard import AuditLog, Guard

    seen = {}

    async def app(scope, receive, send):
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        seen["body"] = len(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent = []

    async def send(message):
        sent.append(message)

    guard = Guard(app, Authenticator([ApiKey("a", digest("correct-key-1"))]), max_body, AuditLog(None))
    scope = {"type": "http", "method": "POST", "path": "/v1/indexes/x/search",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, upload, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), seen


def test_an_unauthenticated_chunked_upload_is_refused_before_a_byte_is_read():
    # 200 MB in 64 KB chunks, no Content-Length (chunked): was read in full before the 401
    upload = _Upload(chunks=3200, size=64 * 1024)
    status, headers, seen = _run_guard({"transfer-encoding": "chunked"}, upload)
    assert status == 401 and upload.calls == 0 and not seen
    assert headers[b"x-request-id"]


def test_a_chunked_body_is_capped_while_it_is_read():
    upload = _Upload(chunks=3200, size=16 * 1024)
    status, _, seen = _run_guard({"authorization": "Bearer correct-key-1", "transfer-encoding": "chunked"}, upload)
    assert status == 413 and upload.calls == 5 and not seen  # stopped at the first chunk past 64 KB
    status, _, _ = _run_guard({"authorization": "Bearer correct-key-1", "content-length": str(10**9)}, _Upload(1, 10))
    assert status == 413
    status, _, _ = _run_guard({"authorization": "Bearer correct-key-1", "content-length": "-5"}, _Upload(1, 10))
    assert status == 413
    upload = _Upload(chunks=3, size=1000)  # within the cap: the app gets the whole body
    status, _, seen = _run_guard({"authorization": "Bearer correct-key-1", "transfer-encoding": "chunked"}, upload)
    assert status == 200 and seen["body"] == 3000


def test_audit_log_is_append_only_json_lines_without_keys(tmp_path):
    from server.guard import AuditLog

    log = AuditLog(tmp_path / "a" / "audit.jsonl")
    threads = [threading.Thread(target=lambda i=i: [log.write({"key_id": f"k{i}", "n": j, "query": "é" * 300}) for j in range(50)])
               for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    log.close()
    lines = (tmp_path / "a" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 200 and all(json.loads(x)["query"] == "é" * 300 for x in lines)  # never interleaved
    AuditLog(tmp_path / "a" / "audit.jsonl").write({"n": "again"})
    assert len((tmp_path / "a" / "audit.jsonl").read_text(encoding="utf-8").splitlines()) == 201  # appended, not rewritten


# ----------------------------------------------------------------------------- jobs


def test_job_queue_is_bounded_per_index_with_retry_after():
    from server.jobs import JobManager, QueueFull

    gate = threading.Event()
    jm = JobManager(workers=1, per_index=2, per_key=2)
    a = jm.submit("ix", "diff", "k", {}, lambda: gate.wait(10) and "a")
    b = jm.submit("ix", "diff", "k", {}, lambda: "b")
    with pytest.raises(QueueFull) as e:
        jm.submit("ix", "diff", "k", {}, lambda: "c")
    assert e.value.retry_after >= 1
    other = jm.submit("other", "diff", "k", {}, lambda: "d")  # the bound is per index
    jm.cancel(b)
    assert b.status == "cancelled"
    gate.set()
    assert jm.wait(a, 10).status == "done" and a.result == "a"
    assert jm.wait(other, 10).result == "d"
    jm.shutdown()


def test_a_running_job_stops_at_its_next_checkpoint_when_cancelled():
    from indexer.core.progress import checkpoint
    from server.jobs import JobManager

    started, steps = threading.Event(), []

    def work():
        started.set()
        for i in range(1000):
            checkpoint(i, 1000)
            steps.append(i)
            time.sleep(0.005)
        return "finished"

    jm = JobManager(workers=1, per_index=4)
    job = jm.submit("ix", "correlations", "k", {}, work)
    started.wait(5)
    time.sleep(0.05)
    assert job.status == "running" and 0 < (job.progress or 0) < 1
    jm.cancel(job)
    assert jm.wait(job, 5).status == "cancelled" and len(steps) < 1000 and job.result is None
    jm.shutdown()
    checkpoint(1, 2)  # outside a job: a no-op


def test_failed_jobs_carry_a_public_error_and_unexpected_ones_only_an_id():
    from analyses.matrix import AnalysisError
    from server.app import _api_error
    from server.jobs import JobManager

    jm = JobManager(error_of=_api_error)
    known = jm.submit("ix", "diff", "k", {}, lambda: (_ for _ in ()).throw(AnalysisError("filter A matches 0 documents")))
    boom = jm.submit("ix", "diff", "k", {}, lambda: (_ for _ in ()).throw(RuntimeError("/secret/path exploded")))
    assert jm.wait(known, 5).error == {"status": 422, "detail": "filter A matches 0 documents"}
    assert jm.wait(boom, 5).error["status"] == 500 and "secret" not in json.dumps(boom.view())
    jm.shutdown()


# ----------------------------------------------------------------------------- inputs and errors


def test_filter_values_are_checked_not_passed_to_qdrant():
    from indexer.core.filters import FilterError, check_value, filter_from_dict, parse_where

    assert check_value("x", 2.0) == 2 and isinstance(check_value("x", 2.0), int)
    assert check_value("x", 1.5) == 1.5 and check_value("x", 1e23) == 1e23  # a float matches by range
    for bad in (float("nan"), float("inf"), 2**70, "x" * 5000, None, {"a": 1}):
        with pytest.raises(FilterError, match="where.x"):
            check_value("x", bad)
    with pytest.raises(FilterError, match="64-bit"):
        parse_where(["n=" + "9" * 30])
    assert parse_where(["s=1.5"]).equals == {"s": 1.5}
    with pytest.raises(FilterError):
        filter_from_dict({"a": float("nan")})


def test_float_filters_match_by_range_in_both_backends(tmp_path):
    from indexer.store import DocPoint, EdgeStore, Filter, ServerStore

    for store in (EdgeStore(tmp_path / "e"), ServerStore(":memory:", "floats")):
        store.create(dense_dim=4, label_dim=3)
        store.upsert_docs([DocPoint("a", [1], [1.0], [1, 0, 0, 0], {"score": 1.5, "n": 2}),
                           DocPoint("b", [1], [1.0], [0, 1, 0, 0], {"score": 2.5, "n": 3})])
        assert store.count(Filter({"score": 1.5})) == 1
        assert store.count(Filter({"score": [1.5, 2.5]})) == 2
        assert store.count(Filter({"score": 1e23})) == 0
        assert store.count(Filter({"n": 2})) == 1
        store.drop()


def test_error_messages_for_clients_carry_no_filesystem_paths():
    from server.app import public_message

    msg = public_message("index at /root/.saedex/indexes/x is open in another process: cannot open /tmp/a/docs: lock")
    assert "/root" not in msg and "/tmp" not in msg and msg.count("<path>") == 2
    assert public_message("no index named 'x' (run `saedex index PATH --index x`)") == "no index named 'x' (run `saedex index PATH --index x`)"


class _FakeStore:
    """Just what the BM25 cache needs from a store."""

    def __init__(self, root: Path):
        self.root = root

    def count(self, flt=None):
        return 3

    def cache_file(self, name):
        return self.root / name

    def scroll_docs(self, **kw):
        from indexer.store import Hit

        yield [Hit("a", 0, {"text": "red apples"}), Hit("b", 0, {"text": "green pears"}), Hit("c", 0, {"text": "blue plums"})]


class _Planted:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/saedex-planted-pickle-ran")


def test_planted_cache_files_cannot_run_code(tmp_path):
    """Caches were pickles loaded from the index folder: a planted file there executed code."""
    from indexer.labels.windows import load_snippet_cache
    from search.bm25 import load_or_build_bm25

    MARKER.unlink(missing_ok=True)
    payload = pickle.dumps(_Planted())
    for name in ("bm25.pkl", "snippet_cache.pkl"):
        (tmp_path / name).write_bytes(payload)
    np.save(tmp_path / "evil.npy", np.array([_Planted()], dtype=object), allow_pickle=True)
    (tmp_path / "evil.npy").replace(tmp_path / "bm25.npz")  # an object array where the cache should be
    (tmp_path / "snippet_cache.npz").write_bytes(payload)
    bm = load_or_build_bm25(_FakeStore(tmp_path))
    assert bm.top("apples", 1)[0][0] == 0  # rebuilt, and the rebuilt cache loads
    assert load_or_build_bm25(_FakeStore(tmp_path)).doc_ids == ["a", "b", "c"]
    assert load_snippet_cache(tmp_path / "snippet_cache.npz") == {}
    assert not MARKER.exists()


# ----------------------------------------------------------------------------- one error base


def test_every_user_facing_error_has_one_exit_code_and_one_http_status():
    from analyses.matrix import AnalysisError
    from indexer.store.catalog import LatentStatsStale
    from indexer.ingest.corpus import CorpusError
    from indexer.core.errors import SaedexError
    from indexer.core.llm import LLMNotConfigured, LLMUnavailable
    from indexer.encode.recipe import ManifestMismatch, OutdatedIndex
    from indexer.store import IndexLocked, IndexNotFound, StoreError
    from search.engine import SearchError
    from indexer.core.filters import FilterError
    from server.app import _api_error

    want = {AnalysisError: (2, 422), SearchError: (2, 422), FilterError: (2, 422), CorpusError: (2, 422),
            KeyConfigError: (2, 422), LLMNotConfigured: (2, 422), IndexNotFound: (2, 404), LatentStatsStale: (2, 409),
            ManifestMismatch: (2, 409), OutdatedIndex: (2, 409), StoreError: (1, 503), IndexLocked: (1, 503),
            LLMUnavailable: (1, 503)}
    for cls, (code, status) in want.items():
        e = cls("x at /secret/place")
        assert isinstance(e, SaedexError) and (e.exit_code, e.http_status) == (code, status), cls
        assert _api_error(e) == {"status": status, "detail": "x at <path>"}
    assert _api_error(ValueError("a bug")) is None  # unexpected: an opaque 500 with a request id


def test_the_cli_reports_user_errors_in_one_line_and_bugs_with_their_traceback(monkeypatch):
    from typer.testing import CliRunner

    import search.engine
    from server.cli import app

    r = CliRunner().invoke(app, ["search", "x", "--index", "no/such"])
    assert r.exit_code == 2 and "invalid index name" in r.output and "Traceback" not in r.output

    def bug(*a, **k):
        raise ValueError("a programming bug, not a user mistake")

    monkeypatch.setattr(search.engine.SearchOptions, "check", bug)
    r = CliRunner().invoke(app, ["search", "x", "--index", "anything"])
    assert r.exit_code == 1 and "unexpected error" in r.output and isinstance(r.exception, ValueError)


def test_audit_records_stay_one_line_whatever_the_query(tmp_path):
    """schemathesis sent queries with U+2028 and U+0085, which str.splitlines splits records on."""
    from server.guard import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl")
    odd = "a\u2028b\x85c\x1cd\ud800e\nf"
    log.write({"query": odd})
    log.close()
    text = (tmp_path / "audit.jsonl").read_text(encoding="ascii")
    assert len(text.splitlines()) == 1 and json.loads(text)["query"] == odd
