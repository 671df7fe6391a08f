"""A query's whole path through the embedder, saved once: tokenizer + one TorchScript module.

A one-off `saedex search` spent ~3.5 s importing sentence-transformers (and with it datasets and
pandas) to embed ten words. The path a query takes - tokenise, transformer, mean pooling,
normalise - is saved the first time it can be checked (the tokenizer as ``tokenizers`` JSON, the
rest as a TorchScript trace of the model's own modules) and later processes load it with
``tokenizers`` and ``torch.jit.load`` alone. It is kept only if, on probe texts of several
lengths (one past the truncation limit), its token ids equal the model tokenizer's and its
vectors equal the eager model's exactly; it is keyed by the model's files, the torch version,
the precision and the sequence limit, so any change builds a new one.
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

FORMAT = 1
PROBES = ["a probe of middling length for the trace", "short", "Ünïcödé, emoji 🙂 and numbers 3.14 — dashes",
          "a much longer probe " * 12, "past the limit " * 200]
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
        self.module = torch.jit.load(str(folder / "path.pt"), map_location="cpu")

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
    """Trace ``model`` (a SentenceTransformer: transformer + pooling + normalise) as one module,
    check it and a ``tokenizers`` copy of its tokenizer on :data:`PROBES`, and save both. False
    (nothing saved) if the model is of another shape or anything differs."""
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
            feats = {"input_ids": ids, "attention_mask": mask,
                     "token_embeddings": self.auto(input_ids=ids, attention_mask=mask).last_hidden_state}
            for m in self.rest:
                feats = m(feats)
            return feats["sentence_embedding"]

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
            saved = SavedQueryPath(tmp)
            for text in PROBES:
                f = prep([text])
                ids, mask = saved.tensors(text)
                if not (torch.equal(ids, f["input_ids"]) and torch.equal(mask, f["attention_mask"])):
                    return False
                if not torch.equal(saved.module(ids, mask), model(dict(f))["sentence_embedding"]):
                    return False
        os.replace(tmp, folder) if not folder.exists() else None
        return True
    except Exception:  # noqa: BLE001 - an untraceable model keeps using sentence-transformers
        return False
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
