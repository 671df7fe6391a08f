"""Hardening, round two: one regression test per hole an attacker-style probe found (cost-bounded
filters, exact filter semantics, lone surrogates, ingest and import validation, CSV, symlinks,
BM25 on an empty index, paged latents, LLM errors and pools, correlations cost and cancel, fair
job queues, the audit log, the keys file, the deployment files, headers). No reader model: a
real Qdrant Edge store with synthetic vectors, MiniLM where a route needs it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.core.filters import FILTER_BUDGET, FilterError, filter_from_dict, parse_where
from indexer.store import DocPoint, EdgeStore, Filter, ServerStore
from tests.conftest import ROOT, write_jsonl

# ----------------------------------------------------------------------------- filters


def _number_docs() -> list[DocPoint]:
    """Payloads as ingest stores them: JSON 0.0 and 2.0 are canonical integers, 0.5 a float."""
    from indexer.core.filters import canonical_number

    scores = [0.0, 0.5, 1.0, 2.0, 0.5, 3, 0.25, 0.0]
    return [DocPoint(f"d{i}", [i % 5 + 1], [1.0], [1.0, 0, 0, 0],
                     {"text": f"doc {i}", "dataset": "x", "score": canonical_number(s), "tag": ["sarc", "dry"][i % 2],
                      "flag": bool(i % 3), "many": canonical_number([s, 7.0])})
            for i, s in enumerate(scores)]


def _reference(docs, flt: Filter) -> set[str]:
    """What a filter means, written out directly: numbers equal by value, other kinds exactly,
    a list payload matching when any element does."""
    def eq(v, w):
        if isinstance(v, bool) or isinstance(w, bool):
            return isinstance(v, bool) and isinstance(w, bool) and v == w
        if isinstance(v, (int, float)) and isinstance(w, (int, float)):
            return float(v) == float(w)
        return type(v) is type(w) and v == w

    def match(v, want):
        if isinstance(v, list):
            return any(match(x, want) for x in v)
        return any(eq(v, w) for w in want)

    out = set()
    for d in docs:
        if all(k in d.payload and match(d.payload[k], v if isinstance(v, list) else [v]) for k, v in flt.equals.items()):
            out.add(d.doc_id)
    return out


@pytest.fixture(params=["edge", "client"])
def number_store(request, tmp_path):
    s = EdgeStore(tmp_path / "idx") if request.param == "edge" else ServerStore(":memory:", "numbers")
    s.create(dense_dim=4, label_dim=3)
    s.upsert_docs(_number_docs())
    yield s
    s.drop()


FILTERS = [{"score": 0}, {"score": 0.0}, {"score": [0, 1]}, {"score": 0.5}, {"score": [0.5, 2]}, {"score": 3.0},
           {"many": 7}, {"many": [0.25, 9]}, {"tag": "sarc"}, {"tag": ["sarc", "dry"]}, {"flag": True},
           {"flag": [False]}, {"score": 0, "tag": "sarc"}]


@pytest.mark.parametrize("where", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_filters_mean_one_thing_in_both_backends_and_the_columnar_copy(number_store, where):
    """An integer filter matches an equal float (JSON 0.0 stored from a file), in Qdrant Edge,
    qdrant-client and the columnar copy alike, all against one reference."""
    from indexer.store.columns import payload_table, row_mask

    docs = _number_docs()
    flt = filter_from_dict(where)
    want = _reference(docs, flt)
    got = {h.doc_id for hits in number_store.scroll_docs(flt=flt, with_sparse=False) for h in hits}
    table = payload_table([d.doc_id for d in docs], [d.payload for d in docs])
    cols = {docs[i].doc_id for i in np.flatnonzero(row_mask(table, flt))}
    assert got == want == cols, (where, got, want, cols)
    if where == {"score": 0}:
        assert want == {"d0", "d7"}  # the float 0.0 payloads: unreachable before


@pytest.mark.parametrize("where", [{"tag": ["sarc", 1]}, {"tag": ["sarc", True]}, {"score": [1, True]}])
def test_mixed_type_lists_are_refused_naming_the_field(where):
    with pytest.raises(FilterError, match=r"where\.(tag|score): values of one type only"):
        filter_from_dict(where)


def test_filter_cost_is_bounded_by_cost_not_count():
    filter_from_dict({"tag": [f"s{i}" for i in range(1000)]})  # exact values are cheap: allowed
    filter_from_dict({"score": [0.5 + i / 1000 for i in range(20)]})
    with pytest.raises(FilterError, match="too costly"):
        filter_from_dict({"score": [0.5 + i / 1000 for i in range(21)]})  # each float is a range scan
    with pytest.raises(FilterError, match="too costly"):
        filter_from_dict({f"f{i}": [0.5 + j / 1000 for j in range(10)] for i in range(16)})  # spread over fields
    with pytest.raises(FilterError, match="too costly"):
        parse_where([f"score={0.5 + i / 1000}" for i in range(25)])  # the CLI's --where too
    assert FILTER_BUDGET == 1000


def test_a_costly_float_filter_no_longer_reaches_the_store(number_store):
    """The attack: 1,000 floats in one condition cost ~270 ms a search in Qdrant Edge. The
    largest filter allowed now costs a few ms."""
    flt = filter_from_dict({"score": [0.5 + i / 1000 for i in range(20)]})
    t = time.perf_counter()
    for _ in range(5):
        number_store.search_sparse([1, 2, 3], [1.0, 1.0, 1.0], limit=5, flt=flt)
    assert (time.perf_counter() - t) / 5 < 0.05


@pytest.mark.parametrize("where", [{"tags": "a\ud800"}, {"tags": ["a", "b\udfff"]}, {"t\ud800": "x"}])
def test_lone_surrogates_are_refused_in_request_strings(where):
    from analyses.params import DiffParams
    from search.params import SearchParams

    with pytest.raises(Exception, match="lone surrogate"):
        SearchParams.model_validate({"query": "x", "where": where})
    with pytest.raises(Exception, match="lone surrogate"):
        DiffParams.model_validate({"a": where, "b": {"x": 1}})
    with pytest.raises(Exception, match="lone surrogate"):
        SearchParams.model_validate({"query": "fine \ud800"})


def test_job_listing_survives_any_stored_value():
    from server.jobs import JobManager

    jm = JobManager()
    job = jm.submit("ix", "diff", "k", {"a": {"t": "x\ud800"}}, lambda: {"odd": "y\udfff"})
    jm.wait(job, 5)
    json.dumps([j.view() for j in jm.list()]).encode("utf-8")  # no surrogate survives into a view
    jm.shutdown()


# ----------------------------------------------------------------------------- ingest


def _read(path, **kw):
    from indexer.ingest.corpus import read_corpus

    return list(read_corpus(path, **kw))


@pytest.mark.parametrize("line, problem", [
    ('{"text": "a\\ud800b"}', "field 'text' holds a lone surrogate"),
    ('{"text": "ok", "id": "x\\udc00"}', "field 'id' holds a lone surrogate"),
    ('{"text": "ok", "tag": ["fine", "bad\\ud800"]}', "field 'tag' holds a lone surrogate"),
    ('{"text": "ok", "score": NaN}', "field 'score': nan is not a finite number"),
    ('{"text": "ok", "score": Infinity}', "field 'score': inf is not a finite number"),
    ('{"text": "ok", "n": 99999999999999999999}', "does not fit 64 bits"),
    ('{"text": "ok", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"text": "ok", "deep": ' + "[" * 40 + "]" * 40 + "}", "nested deeper than 32"),
])
def test_ingest_validates_every_field_before_anything_is_written(tmp_path, line, problem):
    from indexer.ingest.corpus import CorpusError

    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(CorpusError, match=f"bad.jsonl:2: .*{problem}" if "deep" not in line or "deeper" in problem else "bad.jsonl:2"):
        _read(f)
    assert [r.text for r in _read(f, skip_invalid=True)] == ["fine"]


def test_ingest_stores_integral_floats_as_integers(tmp_path):
    f = write_jsonl(tmp_path / "n.jsonl", [{"text": "a", "score": 0.0, "xs": [1.0, 2.5]}])
    assert _read(f)[0].fields == {"score": 0, "xs": [1, 2.5]} and type(_read(f)[0].fields["score"]) is int


def test_a_broken_csv_is_an_error_naming_the_line(tmp_path):
    from indexer.ingest.corpus import CorpusError

    f = tmp_path / "q.csv"
    f.write_text('id,text\n1,fine\n2,"unclosed\n3,swallowed\n4,too\n')
    with pytest.raises(CorpusError, match=r"q.csv:3: invalid CSV"):
        _read(f, id_field="id")
    f.write_text("id,text\n1,fine\n2,one,extra\n")
    with pytest.raises(CorpusError, match=r"q.csv:3: 3 fields but the header names 2"):
        _read(f, id_field="id")
    assert [r.id for r in _read(f, id_field="id", skip_invalid=True)] == ["1"]


def test_folder_ingest_follows_no_symlink_out_and_refuses_special_files(tmp_path):
    from indexer.ingest.corpus import CorpusError

    secret = tmp_path / "secret.txt"
    secret.write_text("the password")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("a real document")
    (folder / "inside.txt").symlink_to(folder / "a.txt")  # a link within the folder is fine
    (folder / "leak.txt").symlink_to(secret)
    os.mkfifo(folder / "pipe.txt")
    with pytest.raises(CorpusError, match="leak.txt: a symlink out of the folder"):
        _read(folder)
    kept = _read(folder, skip_invalid=True)
    assert sorted(r.id for r in kept) == ["a.txt", "inside.txt"] and all("password" not in r.text for r in kept)
    assert "leak.txt" in [r.id for r in _read(folder, skip_invalid=True, follow_symlinks=True)]
    dev = tmp_path / "zero.jsonl"
    dev.symlink_to("/dev/zero")
    with pytest.raises(CorpusError, match="not a regular file"):
        _read(dev)


# ----------------------------------------------------------------------------- import


def _export_like(tmp_path, rows=4, **recipe_changes) -> tuple[pa.Table, dict]:
    from indexer.encode.recipe import Recipe
    from indexer.encode.pooling import pack

    recipe = Recipe.external(64, embedder="all-MiniLM-L6-v2").to_dict()
    for k, v in recipe_changes.items():
        recipe[k] = v
    texts = [f"document number {i} about nothing" for i in range(rows)]
    t = pa.table({"id": [f"r{i}" for i in range(rows)], "dataset": ["d"] * rows, "text": texts,
                  "latents": pa.array([[1, 5], [2], [3, 9], [4]][:rows] * (rows // 4 or 1), pa.list_(pa.int32()))[:rows],
                  "values": pa.array([[1.0, 0.5], [2.0], [0.1, 0.2], [3.0]][:rows] * (rows // 4 or 1), pa.list_(pa.float32()))[:rows],
                  "_fires": [pack(np.array([[1, 0], [5, 1]])), pack(np.array([[2, 0]])), "", ""][:rows],
                  "_offsets": [pack(np.array([[0, 8], [9, 15]]))] * rows,
                  "topic": ["a", "b", "a", "b"][:rows]})
    return t, recipe


def _write(tmp_path, table: pa.Table, recipe, name="f.parquet") -> Path:
    p = tmp_path / name
    meta = {b"saedex.recipe": json.dumps(recipe).encode() if not isinstance(recipe, bytes) else recipe}
    pq.write_table(table.replace_schema_metadata(meta), p)
    return p


def _import(path, index):
    from indexer.ingest.interchange import import_parquet

    return import_parquet(path, index, progress=False, refresh=False)


def _indexes():
    from indexer.store import list_indexes

    return list_indexes(None)


def test_a_good_file_imports(tmp_path):
    t, recipe = _export_like(tmp_path)
    rep = _import(_write(tmp_path, t, recipe), "imp_ok")
    assert rep.indexed == 4 and "imp_ok" in _indexes()


def _crafted(tmp_path):
    t, recipe = _export_like(tmp_path)
    yield "version", t, {**recipe, "version": "two"}, "version must be an integer"
    yield "layer", t, {**recipe, "reader": {**recipe["reader"], "layer": "six"}}, "reader.layer must be an integer"
    yield "d_sae", t, {**recipe, "sae": {**recipe["sae"], "d_sae": 10**12}}, "sae.d_sae must be an integer in"
    yield "embedder path", t, {**recipe, "embedder": "../../../../etc"}, "embedder '../../../../etc'"
    yield "reader path", t, {**recipe, "reader": {**recipe["reader"], "model": "/tmp/evil"}}, "reader '/tmp/evil'"
    yield "sae path", t, {**recipe, "sae": {**recipe["sae"], "path": "/tmp/evil"}}, "sae path '/tmp/evil'"
    yield "not json", t, b"{nope", "not valid JSON"
    yield "latents type", t.set_column(t.column_names.index("latents"), "latents", pa.array([["1"]] * 4, pa.list_(pa.string()))), \
        recipe, "column 'latents' has type"
    dup = pa.Table.from_arrays(t.columns + [t.column("id")], names=t.column_names + ["id"])
    yield "duplicate id column", dup, recipe, "duplicate column"
    yield "timestamp", t.append_column("when", pa.array([0, 1, 2, 3], pa.timestamp("ms"))), recipe, "column 'when' has type timestamp"
    from indexer.encode.pooling import pack

    bad_offsets = [pack(np.array([[0, 8], [9, 5000]]))] * 4
    yield "offsets past text", t.set_column(t.column_names.index("_offsets"), "_offsets", pa.array(bad_offsets)), recipe, \
        "_offsets holds a span outside the text"
    bad_fires = [pack(np.array([[1, 7]]))] + [""] * 3
    yield "fire to no token", t.set_column(t.column_names.index("_fires"), "_fires", pa.array(bad_fires)), recipe, \
        "_fires points at a token"
    yield "fires garbage", t.set_column(t.column_names.index("_fires"), "_fires", pa.array(["!!notbase64"] * 4)), recipe, \
        "not what saedex writes"
    yield "duplicate id", t.set_column(0, "id", pa.array(["same"] * 4)), recipe, "duplicate id"


@pytest.mark.parametrize("case", range(14))
def test_crafted_import_files_are_refused_before_any_write(tmp_path, case):
    from indexer.ingest.interchange import InterchangeError

    name, table, recipe, msg = list(_crafted(tmp_path))[case]
    index = f"crafted{case}"
    with pytest.raises(InterchangeError, match=msg.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        _import(_write(tmp_path, table, recipe), index)
    assert index not in _indexes(), name


def test_import_bounds_what_it_decompresses(tmp_path, monkeypatch):
    """A tiny file declaring a huge decompressed column is refused from its metadata, before
    a row is read (a 22 KB file once held one 400 MB text)."""
    import indexer.ingest.interchange as X

    t, recipe = _export_like(tmp_path)
    texts = ["x" * 3_000_000] + t.column("text").to_pylist()[1:]
    big = _write(tmp_path, t.set_column(t.column_names.index("text"), "text", pa.array(texts)), recipe)
    assert big.stat().st_size < 200_000  # compresses to almost nothing
    monkeypatch.setattr(X, "MAX_CHUNK_BYTES", 1_000_000)
    with pytest.raises(X.InterchangeError, match="decompressed"):
        _import(big, "bomb")
    monkeypatch.setattr(X, "MAX_CHUNK_BYTES", 1 << 30)
    monkeypatch.setattr(X, "MAX_TEXT_CHARS", 1_000_000)
    with pytest.raises(X.InterchangeError, match="row 0 .*text of 3,000,000 characters"):
        _import(big, "bomb")
    assert "bomb" not in _indexes()


def test_an_import_failing_mid_write_leaves_no_index(tmp_path, monkeypatch):
    import indexer.ingest.interchange as X

    t, recipe = _export_like(tmp_path)
    path = _write(tmp_path, t, recipe)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(X, "_points", boom)
    with pytest.raises(OSError):
        _import(path, "halfway")
    assert "halfway" not in _indexes()


# ----------------------------------------------------------------------------- search pieces


def test_bm25_on_an_empty_index_ranks_nothing():
    from search.bm25 import build_bm25

    assert build_bm25([], []).top("anything", 10) == []
    assert build_bm25(["a"], [""]).top("anything", 10) == []


def test_latents_are_paged_and_bounded():
    from indexer.core.params import ParamsError
    from search.latents import MAX_LATENTS_PAGE, LatentsParams

    with pytest.raises(ParamsError):
        LatentsParams.parse(top=20_000)
    assert LatentsParams.parse(top=MAX_LATENTS_PAGE, offset=1000).offset == 1000


def test_latents_pages_follow_each_other(tmp_path):
    import tests.test_columns as T
    from indexer.labels.refresh import refresh_latents
    from search.latents import LatentsParams, list_latents

    pts = T.synth_points(120, seed=3)
    for p in pts:
        p.dense = [1.0] + [0.0] * 383
    store, _ = T.make_store("paged", pts, dim=384, datasets=())
    try:
        refresh_latents(store, progress=False)
        first = list_latents(store, "paged", LatentsParams.parse(top=30))
        second = list_latents(store, "paged", LatentsParams.parse(top=30, offset=30))
        both = list_latents(store, "paged", LatentsParams.parse(top=60))
        assert first["next_offset"] == 30 and second["offset"] == 30
        assert [l["id"] for l in first["latents"] + second["latents"]] == [l["id"] for l in both["latents"]]
    finally:
        store.close()


# ----------------------------------------------------------------------------- LLM


UPSTREAM_REFUSAL = {"error": {"message": "Incorrect API key provided: sk-pro****1234 (internal upstream at 10.1.2.3:8443)",
                              "type": "invalid_request_error"}}


@pytest.fixture
def refusing_llm(monkeypatch):
    """An OpenAI-compatible endpoint that refuses the key, echoing secrets in its error body."""
    from tests.llm_stub import json_endpoint

    seen: list = []
    srv = json_endpoint(401, UPSTREAM_REFUSAL, seen=seen)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{srv.server_port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    yield seen
    srv.shutdown()


def test_llm_errors_name_the_status_only_and_4xx_is_not_retried(refusing_llm):
    from indexer.core.llm import LLMClient, LLMUnavailable

    c = LLMClient("m", max_retries=4)
    with pytest.raises(LLMUnavailable) as e:
        c.chat("s", "u")
    assert str(e.value) == "LLM endpoint failed (status 401)"
    assert len(refusing_llm) == 1  # no retries of a refusal


def test_a_failed_rerank_says_so_in_its_status(refusing_llm):
    from indexer.store import Hit
    from search.llm_steps import _clients, llm_rerank

    _clients.clear()
    hits = [Hit(f"d{i}", 1.0 - i / 10, {"text": f"doc {i}"}) for i in range(5)]
    out, info = llm_rerank("q", hits, "m")
    assert info["status"] == "failed" and info["error"] == "LLM endpoint failed (status 401)"
    assert [h.doc_id for h in out] == [f"d{i}" for i in range(5)] and "10.1.2.3" not in json.dumps(info)
    _clients.clear()


# ----------------------------------------------------------------------------- correlations and jobs


def test_cooccurrence_is_bounded_and_cancellable():
    import scipy.sparse as sp

    from analyses.correlations import STEP_PRODUCTS, TooManyPairs, _column_blocks, cooccurrence_blocks, npmi_pairs
    from indexer.core.progress import Cancelled, reporting

    rng = np.random.default_rng(0)
    B = sp.csr_matrix((rng.random((250, 2048)) < 0.5).astype(np.float32))  # the probe: every latent kept
    blocks = _column_blocks(B)
    assert len(blocks) > 100 and sum(len(b) for b in blocks) == 2048  # small steps, every latent once
    with pytest.raises(TooManyPairs, match="raise them"):
        npmi_pairs(B, 1, -1.0, max_pairs=500_000)
    steps = []
    with reporting(lambda f: (steps.append(f), len(steps) > 2)[1]):
        with pytest.raises(Cancelled):
            list(cooccurrence_blocks(B))
    assert len(steps) == 3  # stopped at the third step, not after the whole product
    small = sp.csr_matrix((rng.random((300, 60)) < 0.2).astype(np.float32))
    i, j, c = (np.concatenate(x) for x in zip(*cooccurrence_blocks(small, min_support=3)))
    full = np.triu((small.T @ small).toarray(), k=1)
    assert sorted(zip(i.tolist(), j.tolist(), c.tolist())) == sorted(
        (a, b, float(full[a, b])) for a, b in zip(*np.nonzero(full >= 3)))  # exactly the pairs of B^T B
    assert STEP_PRODUCTS <= 1_000_000


def test_one_key_cannot_fill_an_index_queue():
    from server.jobs import JobManager, QueueFull

    gate = threading.Event()
    jm = JobManager(workers=1, per_index=8)
    mine = [jm.submit("ix", "correlations", "greedy", {}, lambda: gate.wait(10)) for _ in range(4)]
    with pytest.raises(QueueFull, match="key 'greedy'"):
        jm.submit("ix", "correlations", "greedy", {}, lambda: None)
    other = jm.submit("ix", "diff", "polite", {}, lambda: "ok")  # another key still gets in
    gate.set()
    assert jm.wait(other, 10).result == "ok" and all(jm.wait(j, 10).status == "done" for j in mine)
    jm.shutdown()


# ----------------------------------------------------------------------------- audit log and keys


def test_the_audit_log_is_truncated_rotated_and_rate_limited(tmp_path, monkeypatch):
    from server.guard import AuditLog

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=20_000, keep=2)
    monkeypatch.setattr(AuditLog, "ANON_PER_MINUTE", 5)
    for _ in range(20):
        log.write({"route": "/v1/" + "x" * 60_000, "key_id": None}, authenticated=False)
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and all(len(line) < 800 for line in lines)
    for i in range(200):
        log.write({"route": "/v1/indexes", "query": "q" * 400, "n": i})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(p.stat().st_size <= 20_000 for p in tmp_path.iterdir())
    log._minute = 0  # a new minute: the suppressed count is written once
    log.write({"route": "/v1/indexes"})
    assert any('"suppressed": 15' in line for line in path.read_text().splitlines())


def test_keys_file_refuses_an_empty_set_and_warns_on_risks(tmp_path, caplog):
    from server.auth import KeyConfigError, load_keys

    f = tmp_path / "keys.json"
    f.write_text(json.dumps({"keys": []}))
    with pytest.raises(KeyConfigError, match="holds no key"):
        load_keys(None, f)
    with pytest.raises(KeyConfigError, match="holds no key"):
        load_keys("", None)  # SAEDEX_API_KEYS="" is set-but-empty, not "no auth"
    f.write_text(json.dumps({"keys": [{"id": "a", "key": "plain-text-key-1"}]}))
    f.chmod(0o644)
    with caplog.at_level("WARNING", logger="saedex.auth"):
        load_keys(None, f)
    assert "readable by other users" in caplog.text and "saedex key-digest" in caplog.text
    f.write_text(json.dumps({"keys": [{"id": "a", "key": "ключ-не-ascii-1"}]}))
    with pytest.raises(KeyConfigError, match="ASCII"):
        load_keys(None, f)


def test_an_empty_key_variable_is_refused_by_the_settings(monkeypatch):
    from indexer.core.settings import settings
    from server.auth import KeyConfigError, keys_from_environment

    monkeypatch.setenv("SAEDEX_API_KEYS", "")
    monkeypatch.delenv("SAEDEX_KEYS_FILE", raising=False)
    assert settings().api_keys == ""
    with pytest.raises(KeyConfigError, match="holds no key"):
        keys_from_environment()


def test_key_digest_command_prints_what_a_keys_file_stores():
    from tests.conftest import cli

    r = cli("key-digest", "my-long-key-123", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["sha256"] == hashlib.sha256(b"my-long-key-123").hexdigest()


# ----------------------------------------------------------------------------- deployment


def test_compose_publishes_no_qdrant_port_and_sets_its_api_key():
    import yaml

    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    q, s = doc["services"]["qdrant"], doc["services"]["saedex"]
    assert not q.get("ports"), "Qdrant must not be published on the host"
    assert "QDRANT__SERVICE__API_KEY" in q["environment"]
    assert s["environment"]["SAEDEX_QDRANT_API_KEY"].startswith("${QDRANT_API_KEY")
    assert q["environment"]["QDRANT__SERVICE__API_KEY"].startswith("${QDRANT_API_KEY")
    assert all(str(p).startswith("127.0.0.1:") for p in s["ports"])


def test_the_server_store_sends_the_qdrant_api_key(monkeypatch):
    from indexer.store.server import list_server_indexes
    from tests.llm_stub import json_endpoint

    seen: list = []
    srv = json_endpoint(200, {"result": {"collections": []}, "status": "ok", "time": 0}, seen=seen)
    try:
        monkeypatch.setenv("SAEDEX_QDRANT_API_KEY", "qdrant-secret-key")
        assert list_server_indexes(f"http://127.0.0.1:{srv.server_port}") == []
        assert seen and all(h.get("api-key") == "qdrant-secret-key" for h in seen)
    finally:
        srv.shutdown()


# ----------------------------------------------------------------------------- HTTP details


@pytest.fixture(scope="module")
def http_client():
    from fastapi.testclient import TestClient

    from server.app import create_app

    app = create_app(preload=False, api_keys=["hardening-key-1"], audit_log=False)
    with TestClient(app) as c:
        yield c


AUTH = {"Authorization": "Bearer hardening-key-1"}


def test_responses_carry_security_headers(http_client):
    r = http_client.get("/v1/indexes", headers=AUTH)
    assert r.status_code == 200
    for h in ("content-security-policy", "x-frame-options", "x-content-type-options"):
        assert h in r.headers
    assert r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in http_client.get("/").headers["content-security-policy"]


def test_a_duplicate_authorization_header_is_refused(http_client):
    r = http_client.get("/v1/indexes", headers=[("Authorization", "Bearer wrong-key-123"), ("Authorization", AUTH["Authorization"])])
    assert r.status_code == 401


def test_index_names_with_a_trailing_newline_are_refused(http_client):
    from indexer.core.paths import INDEX_NAME_RE

    assert not INDEX_NAME_RE.match("abc\n")
    assert http_client.get("/v1/indexes/abc%0A", headers=AUTH).status_code == 422


@pytest.mark.parametrize("body, field", [
    ({"query": "x", "where": {"tag": ["sarc", 1]}}, "where.tag: values of one type only"),
    ({"query": "x", "where": {"score": [0.5 + i / 1000 for i in range(30)]}}, "too costly"),
    ({"query": "x", "temperature": "NaN"}, "temperature"),
])
def test_bad_search_bodies_are_422_naming_the_field(http_client, body, field):
    r = http_client.post("/v1/indexes/none/search", headers={**AUTH, "content-type": "application/json"},
                         content=json.dumps(body).replace('"NaN"', "NaN"))
    assert r.status_code == 422 and field in r.text, r.text


def test_diff_refuses_an_empty_coverage_window(http_client):
    r = http_client.post("/v1/indexes/none/diff", headers=AUTH, json={"a": {"x": 1}, "b": {"x": 2}, "min_coverage": 1, "max_coverage": 0})
    assert r.status_code == 422 and "min_coverage" in r.text


def test_a_keyless_server_answers_only_to_localhost():
    from fastapi.testclient import TestClient

    from server.app import create_app

    app = create_app(preload=False, keys=[], audit_log=False)
    with TestClient(app, base_url="http://evil.example") as c:
        assert c.get("/v1/indexes").status_code == 421  # DNS rebinding: a page on evil.example
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/v1/indexes").status_code == 200


def test_a_stalled_upload_times_out():
    from server.auth import ApiKey, Authenticator, digest
    from server.guard import AuditLog, Guard

    sent = []

    async def app(scope, receive, send):
        raise AssertionError("the app must not run")

    async def receive():
        await asyncio.sleep(10)

    async def send(msg):
        sent.append(msg)

    guard = Guard(app, Authenticator([ApiKey("a", digest("correct-key-1"))]), 1000, AuditLog(None), body_timeout=0.2)
    scope = {"type": "http", "path": "/v1/indexes", "method": "POST", "headers": [(b"authorization", b"Bearer correct-key-1")]}
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 408


def test_the_search_pool_serves_keys_in_turn():
    """A key with many requests in flight no longer takes the pool in proportion to them."""
    from server.fairpool import FairPool

    pool, order, gate = FairPool(1), [], threading.Event()
    first = pool.submit("greedy", gate.wait, 5)  # holds the one worker
    greedy = [pool.submit("greedy", order.append, f"g{n}") for n in range(10)]
    polite = pool.submit("polite", order.append, "p0")
    gate.set()
    for f in [first, polite, *greedy]:
        f.result(5)
    assert order.index("p0") <= 1  # served after at most one greedy request, not after ten
    failing = pool.submit("k", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    pool.shutdown()


def test_each_key_is_rate_limited_before_its_body_is_read(monkeypatch):
    from fastapi.testclient import TestClient

    import server.guard as G
    from server.app import create_app
    from server.auth import ApiKey, digest

    monkeypatch.setattr(G, "REFUSAL_PAUSE_S", 0.0)
    app = create_app(preload=False, keys=[ApiKey("flood", digest("flooding-key-1")), ApiKey("calm", digest("calm-key-123"))],
                     audit_log=False, rate_limit=5)
    flood = {"Authorization": "Bearer flooding-key-1"}
    with TestClient(app) as c:
        codes = [c.get("/v1/indexes", headers=flood).status_code for _ in range(30)]
        assert codes.count(200) <= 12 and codes[-1] == 429  # a burst of 2 x rate, then refused
        assert c.get("/v1/indexes", headers={"Authorization": "Bearer calm-key-123"}).status_code == 200  # per key
        assert c.get("/healthz").status_code == 200
        monkeypatch.setattr(G, "REFUSAL_PAUSE_S", 0.3)
        t = time.perf_counter()
        assert c.get("/v1/indexes", headers=flood).status_code == 429
        assert time.perf_counter() - t >= 0.3  # a refusal is answered after a pause: retrying at once is no flood


def test_import_stores_integral_floats_as_integers(tmp_path):
    """The same number rule as ingest: a file's 0.0 is stored as 0, so the filter 0 finds it."""
    from indexer.store import open_store

    t, recipe = _export_like(tmp_path)
    t = t.append_column("score", pa.array([0.0, 0.5, 1.0, 2.0], pa.float64()))
    _import(_write(tmp_path, t, recipe), "imp_numbers")
    with open_store("imp_numbers") as store:
        assert store.count(filter_from_dict({"score": 0})) == 1 and store.count(filter_from_dict({"score": [1, 2]})) == 2
        assert store.count(filter_from_dict({"score": 0.5})) == 1
