"""The saved query path: a later process embeds a query with ``tokenizers`` and torch alone (the
lean BERT forward and a traced pooling, or one TorchScript trace), without importing
sentence-transformers, and gets the eager model's vector exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import indexer.encode.query_path as query_path
from indexer.encode.embedder import Embedder, get_embedder
from indexer.encode.lean_bert import LEAN_MAX_TOKENS, LeanBert, Routed, verified

TEXTS = ["sarcastic remarks about politicians", "x", "Ünïcödé, emoji 🙂 — dashes", "edge " * 30, "a longer text " * 12,
         "long text " * 300]


def test_saved_query_path_equals_the_model_and_loads_without_sentence_transformers():
    emb = get_embedder()
    assert emb.save_query_path()
    fresh = Embedder()
    assert fresh._saved is not None and fresh.dim == emb.dim
    # the lean forward is saved exactly where it reproduces the model (a BERT encoder in bf16 here)
    assert fresh._saved.kind == ("lean" if _lean_is_exact(emb) else "trace")
    eager = Embedder()
    eager._saved = None  # the model's own path
    for t in TEXTS:
        assert np.array_equal(fresh._forward_one(t), eager._forward_one(t)), t
    code = ("import sys, json; from indexer.encode.embedder import Embedder; e = Embedder(); v = e.encode_query(sys.argv[1]); "
            "print(json.dumps([e._saved is not None, 'sentence_transformers' in sys.modules, v.tolist()]))")
    out = subprocess.run([sys.executable, "-c", code, TEXTS[0]], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    saved, st_loaded, vec = json.loads(out.stdout.strip().splitlines()[-1])
    assert saved and not st_loaded
    assert np.array_equal(np.asarray(vec, np.float32), eager._forward_one(TEXTS[0]))


def _bert_inputs(emb: Embedder, short: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test texts as model inputs; ``short``: only those the lean forward serves."""
    tok = emb.model.tokenizer
    inputs = [(f["input_ids"], f["attention_mask"]) for f in
              (tok([t], return_tensors="pt", truncation=True, max_length=emb.max_seq_length) for t in TEXTS)]
    return [x for x in inputs if x[0].shape[1] <= LEAN_MAX_TOKENS] if short else inputs


def _lean_is_exact(emb: Embedder) -> bool:
    auto = emb.model[0].auto_model
    lean = LeanBert.from_model(auto)
    return lean is not None and verified(lean, lambda i, m: auto(input_ids=i, attention_mask=m).last_hidden_state, _bert_inputs(emb))


def test_lean_bert_reproduces_minilm_in_bf16_and_refuses_padding(tmp_path):
    """In bf16 (this CPU's precision where it has native bf16 matmuls) the lean forward's packed
    weights give the eager model's bits, through a save and load too; a padded batch is refused."""
    emb = get_embedder()
    if emb.precision != "bf16":
        pytest.skip("no native bf16 here: queries keep the TorchScript trace")
    auto = emb.model[0].auto_model
    lean = LeanBert.from_model(auto, keep_plain=True)
    assert lean is not None
    lean.save(tmp_path / "lean.pt")
    loaded = LeanBert.load(tmp_path / "lean.pt")
    # a loaded forward holds its linear weights packed only, and says so if asked to save
    assert not any(k.endswith(("qkv.weight", "intermediate.weight")) for k in loaded.state)
    with pytest.raises(ValueError, match="keep_plain"):
        loaded.save(tmp_path / "again.pt")
    eager = lambda i, m: auto(input_ids=i, attention_mask=m).last_hidden_state  # noqa: E731
    assert verified(lean, eager, _bert_inputs(emb)) and verified(loaded, eager, _bert_inputs(emb))
    # past LEAN_MAX_TOKENS the routed forward hands texts to the eager model (a trace in use): still exact
    assert max(x[0].shape[1] for x in _bert_inputs(emb, short=False)) > LEAN_MAX_TOKENS
    assert verified(Routed(loaded, eager), eager, _bert_inputs(emb, short=False))
    ids, mask = _bert_inputs(emb)[0]
    with pytest.raises(ValueError, match="unpadded"):
        loaded(ids, torch.cat([mask[:, :-1], torch.zeros_like(mask[:, :1])], dim=1))
    assert LeanBert.from_model(torch.nn.Linear(2, 2)) is None  # not a BERT encoder


def test_without_the_lean_forward_the_saved_path_is_one_trace_and_exact(tmp_path, monkeypatch):
    """A model the lean forward does not cover (MPNet, fp32 where oneDNN rounds otherwise) saves
    the trace of the whole path, still equal to the eager model."""
    emb = get_embedder()
    monkeypatch.setattr(query_path.LeanBert, "from_model", classmethod(lambda cls, auto, keep_plain=False: None))
    monkeypatch.setattr(query_path, "folder_for", lambda key: tmp_path / f"query-path-{key}")
    assert query_path.build_and_save(emb.model, emb._path_key, emb.dim)
    saved = query_path.load_saved(emb._path_key)
    assert saved is not None and saved.kind == "trace" and (tmp_path / f"query-path-{emb._path_key}" / "path.pt").exists()
    eager = Embedder()
    eager._saved = None
    eager._forwarded = -100  # the model's own eager path for every text
    for t in TEXTS:
        assert np.array_equal(saved(t), eager._forward_one(t)), t


def test_in_process_query_forward_equals_the_model_on_short_and_long_texts():
    """The forward queries use in a process with the model loaded (the lean one up to
    LEAN_MAX_TOKENS tokens where it checks out, the eager model past it, or a trace) gives the
    eager model's bits on every test text."""
    from indexer.encode.embedder import _trace_transformer

    emb = get_embedder()
    auto = emb.model[0].auto_model
    forward = _trace_transformer(emb.model)
    assert forward is not None
    eager = lambda i, m: auto(input_ids=i, attention_mask=m).last_hidden_state  # noqa: E731
    assert verified(forward, eager, _bert_inputs(emb, short=False))
    assert isinstance(forward, Routed) == _lean_is_exact(emb)

