"""The saved query path: a later process embeds a query with ``tokenizers`` and one TorchScript
module, without importing sentence-transformers, and gets the eager model's vector exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from indexer.encode.embedder import Embedder, get_embedder

TEXTS = ["sarcastic remarks about politicians", "x", "Ünïcödé, emoji 🙂 — dashes", "long text " * 300]


def test_saved_query_path_equals_the_model_and_loads_without_sentence_transformers():
    emb = get_embedder()
    assert emb.save_query_path()
    fresh = Embedder()
    assert fresh._saved is not None and fresh.dim == emb.dim
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
