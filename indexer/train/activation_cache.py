"""Cache reader activations on disk for SAE training (resumable, fp16 shards).

Training reads the same tokens many times and the reader forward pass is the expensive part,
so activations are computed once and written as ``shard_00000.npy`` files of fp16 (tokens, d).
Each shard is written to a temporary name and renamed, and ``progress.json`` records how many
documents were consumed, so a killed run resumes where it stopped. The last
``holdout_docs`` documents of the corpus are cached separately (``holdout.npy``) and never used
for training: the SAE report's FVU is measured on them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from indexer.encode.reader import Reader


def _write_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _flush(states: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(states).astype(np.float16) if states else np.zeros((0, 0), np.float16)


def cache_activations(
    texts: list[str],
    out_dir: str | Path,
    reader: Reader,
    max_tokens: int,
    holdout_docs: int = 1000,
    shard_tokens: int = 250_000,
    chunk_docs: int = 256,
    log=print,
) -> dict:
    """Cache up to ``max_tokens`` training tokens plus a held-out set (the last ``holdout_docs``
    texts); returns the progress dict. ``texts`` is the whole corpus in a fixed order, so a resumed
    run continues where it stopped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prog_path = out / "progress.json"
    prog = json.loads(prog_path.read_text()) if prog_path.exists() else {
        "docs_done": 0, "tokens": 0, "shards": 0, "padded": 0, "truncated": 0, "done": False,
    }
    holdout, train = texts[-holdout_docs:], texts[:-holdout_docs]
    if not (out / "holdout.npy").exists():
        states = [s for b in reader.encode(list(holdout)) for s in b.states]
        _write_atomic(out / "holdout.npy", _flush(states))
        log(f"held-out activations: {sum(len(s) for s in states)} tokens from {len(holdout)} docs")
    pending: list[np.ndarray] = []
    pending_tokens = 0
    i = prog["docs_done"]
    t0, tok0 = time.time(), prog["tokens"]
    while prog["tokens"] < max_tokens and i < len(train):
        chunk = train[i : i + chunk_docs]
        for b in reader.encode(list(chunk)):
            pending.extend(b.states)
            n = sum(len(s) for s in b.states)
            pending_tokens += n
            prog["padded"] += b.n_padded
            prog["truncated"] += b.truncated
        i += len(chunk)
        # Shard boundaries depend only on shard_tokens, so a smaller --tokens reproduces a prefix exactly.
        if pending_tokens >= shard_tokens or i >= len(train):
            _write_atomic(out / f"shard_{prog['shards']:05d}.npy", _flush(pending))
            prog["shards"] += 1
            prog["tokens"] += pending_tokens
            prog["docs_done"] = i
            prog_path.write_text(json.dumps(prog))
            rate = (prog["tokens"] - tok0) / max(time.time() - t0, 1e-9)
            log(f"shard {prog['shards']}: {prog['tokens']:,} tokens, {i:,} docs, {rate:,.0f} tok/s")
            pending, pending_tokens = [], 0
    prog["done"] = True
    prog_path.write_text(json.dumps(prog))
    return prog


def iter_shards(cache_dir: str | Path) -> Iterator[np.ndarray]:
    for p in sorted(Path(cache_dir).glob("shard_*.npy")):
        if ".tmp" not in p.name:
            yield np.load(p, mmap_mode="r")
