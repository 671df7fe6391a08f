"""A query's whole path through the embedder, saved once: tokenizer + one TorchScript module.

A one-off `saedex search` spent ~3.5 s importing sentence-transformers (and with it datasets and
pandas) to embed ten words. The path a query takes - tokenise, transformer, mean pooling,
normalise - is saved the first time it can be checked (the tokenizer as ``tokenizers`` JSON, the
rest as a TorchScript trace of the model's own modules) and later processes load it with
``tokenizers`` and ``torch.jit.load`` alone. It is kept only if, on probe texts of several
lengths (one past the truncation limit), its token ids equal the model tokenizer's and its
vectors equal the eager model's exactly; it is keyed by the model's files, the torch version,
the precision and the sequence limit, so any change builds a new one.

Where the model is a BERT encoder, the transformer is also saved as its lean forward
(:mod:`indexer.encode.lean_bert`: packed weights, ~40% less CPU a query) with the pooling traced
behind it, for texts of up to ``LEAN_MAX_TOKENS`` tokens (queries); it is kept on the same
condition (equal to the eager model on every probe), and longer texts take the whole trace.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import threading
import uuid
import warnings
from pathlib import Path

import numpy as np

from indexer.core.paths import saedex_home
from indexer.encode.lean_bert import LeanBert, Routed

FORMAT = 3  # 2: a BERT encoder is saved as its lean forward; 3: with the whole trace for longer texts
PROBES = ["a probe of middling length for the trace", "short", "Ünïcödé, emoji 🙂 and numbers 3.14 — dashes",
          "edge " * 30, "a much longer probe " * 12, "past the limit " * 200]
_lock = threading.Lock()


def query_path_key(name: str, model_path: str, precision: str, max_len: int) -> str:
    """What the saved path depends on: the model's files (names, sizes, mtimes), torch, precision, limit."""
    files = []
    p = Path(model_path)
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file():
                st = f.stat()
                files.append([str(f.relative_to(p)), st.st_size, st.st_mtime_ns])
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "?"
    blob = json.dumps([FORMAT, name, model_path, files, torch_version, precision, max_len])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def folder_for(key: str) -> Path:
    return saedex_home() / "cache" / f"query-path-{key}"


class SavedQueryPath:
    """Embeds one text with the saved tokenizer and module (no sentence-transformers import)."""

    def __init__(self, folder: Path):
        import torch
        from tokenizers import Tokenizer

        meta = json.loads((folder / "meta.json").read_text())
        self.dim = int(meta["dim"])
        self.tokenizer = Tokenizer.from_str((folder / "tokenizer.json").read_text())
        self.tokenizer.enable_truncation(int(meta["max_len"]))
        self.tokenizer.no_padding()
        whole = torch.jit.load(str(folder / "path.pt"), map_location="cpu")
        if (folder / "lean.pt").exists():  # short texts: the lean transformer, then the traced pooling
            self.kind = "lean"
            lean, pool = LeanBert.load(folder / "lean.pt"), torch.jit.load(str(folder / "pool.pt"), map_location="cpu")
            self.module = Routed(lambda ids, mask: pool(lean(ids, mask), mask), whole)  # past LEAN_MAX_TOKENS: the whole trace
        else:
            self.kind = "trace"
            self.module = whole

    def tensors(self, text: str):
        import torch

        with _lock:  # a tokenizer is not re-entrant
            enc = self.tokenizer.encode(text)
        return torch.tensor([enc.ids]), torch.tensor([enc.attention_mask])

    def __call__(self, text: str) -> np.ndarray:
        import torch

        ids, mask = self.tensors(text)
        with torch.inference_mode():
            v = self.module(ids, mask).float().cpu().numpy()[0]
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def load_saved(key: str) -> SavedQueryPath | None:
    folder = folder_for(key)
    if not (folder / "meta.json").exists():
        return None
    try:
        return SavedQueryPath(folder)
    except Exception:  # noqa: BLE001 - unreadable or from another torch: the model path is used instead
        return None


def build_and_save(model, key: str, dim: int) -> bool:
    """Save ``model``'s query path (a SentenceTransformer: transformer + pooling + normalise) with
    a ``tokenizers`` copy of its tokenizer: one trace of the whole path, and beside it for short
    texts the lean forward where the model is a BERT encoder and it checks out. Checked on
    :data:`PROBES` (same token ids, the eager model's vectors bit for bit); False (nothing saved)
    if the trace does not check out."""
    import torch

    mods = list(model)
    auto = getattr(mods[0], "auto_model", None)
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if auto is None or backend is None:
        return False

    class _Path(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.auto = auto
            self.rest = torch.nn.ModuleList(mods[1:])

        def forward(self, ids, mask):
            return _pool(self.rest, self.auto(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

    class _Pool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rest = torch.nn.ModuleList(mods[1:])

        def forward(self, hidden, mask):
            return _pool(self.rest, hidden, mask)

    folder = folder_for(key)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    try:
        tmp.mkdir(parents=True)
        (tmp / "tokenizer.json").write_text(backend.to_str())
        (tmp / "meta.json").write_text(json.dumps({"dim": dim, "max_len": model.max_seq_length, "format": FORMAT}))
        prep = getattr(model, "preprocess", None) or model.tokenize
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            f = prep([PROBES[0]])
            traced = torch.jit.trace(_Path().eval(), (f["input_ids"], f["attention_mask"]), check_trace=False, strict=False)
            torch.jit.save(traced, str(tmp / "path.pt"))
            if not _matches(SavedQueryPath(tmp), model, prep):
                return False
            lean = LeanBert.from_model(auto, keep_plain=True)
            if lean is not None:
                lean.save(tmp / "lean.pt")
                hidden = auto(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).last_hidden_state
                torch.jit.save(torch.jit.trace(_Pool().eval(), (hidden, f["attention_mask"]), check_trace=False, strict=False),
                               str(tmp / "pool.pt"))
                if not _matches(SavedQueryPath(tmp), model, prep):
                    (tmp / "lean.pt").unlink()
                    (tmp / "pool.pt").unlink()
        os.replace(tmp, folder) if not folder.exists() else None
        return True
    except Exception:  # noqa: BLE001 - an untraceable model keeps using sentence-transformers
        return False
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()


def _pool(rest, hidden, mask):
    """The model's modules after the transformer (pooling, normalise) on its token embeddings."""
    feats = {"attention_mask": mask, "token_embeddings": hidden}
    for m in rest:
        feats = m(feats)
    return feats["sentence_embedding"]


def _matches(saved: SavedQueryPath, model, prep) -> bool:
    """The saved path tokenises as the model does and embeds every probe to the model's bits."""
    import torch

    for text in PROBES:
        f = prep([text])
        ids, mask = saved.tensors(text)
        if not (torch.equal(ids, f["input_ids"]) and torch.equal(mask, f["attention_mask"])):
            return False
        if not torch.equal(saved.module(ids, mask), model(dict(f))["sentence_embedding"]):
            return False
    return True
