"""Training inputs of the concept family: sentence embeddings of a corpus's units, cached as shards.

The token family's trainer reads cached activations (:mod:`indexer.train.activation_cache`); the
concept family gives it unit embeddings in the same shard format, so one trainer serves both.
What goes in matters more than how long it trains (HypotheSAEs; our pilot): the same Debian
package description repeated a hundred times became a latent of its own. So units are
de-duplicated (case and white space folded) and the sources are balanced: each source gets an
equal share of ``max_units``, and what a small source cannot fill goes to the others.
Resumable: finished shards stay, ``progress.json`` says how far embedding got.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from indexer.encode.embedder import Embedder
from indexer.encode.units import units_of

SHARD_UNITS = 20_000


def balanced_units(docs: Iterable[tuple[str, str]], max_units: int, seed: int = 0,
                   split: Callable[[str], list[str]] = units_of) -> tuple[list[str], dict[str, int]]:
    """Distinct units of ``(text, source)`` documents, at most ``max_units``, balanced over sources
    (water-filling), shuffled with ``seed``; and how many each source gave. ``split`` makes a
    document's units (its sentences; ``benchmarks/window_units.py`` measures other units)."""
    by_source: dict[str, list[str]] = {}
    seen: set[str] = set()
    for text, source in docs:
        for u in split(text):
            key = " ".join(u.lower().split())
            if key not in seen:
                seen.add(key)
                by_source.setdefault(source or "", []).append(" ".join(u.split()))
    rng = random.Random(seed)
    quota, left = {}, max_units
    sources = sorted(by_source, key=lambda s: len(by_source[s]))
    for i, s in enumerate(sources):
        quota[s] = min(len(by_source[s]), left // (len(sources) - i))
        left -= quota[s]
    units = []
    for s in sorted(by_source):
        units.extend(rng.sample(by_source[s], quota[s]))
    rng.shuffle(units)
    return units, quota


def cache_unit_embeddings(units: list[str], out_dir: str | Path, embedder: Embedder, holdout_units: int = 5000,
                          shard_units: int = SHARD_UNITS, log=print) -> dict:
    """Embed ``units`` into ``out_dir`` (the last ``holdout_units`` as ``holdout.npy``, the rest as
    shards); returns the progress dict. Re-running continues where a killed run stopped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prog_path = out / "progress.json"
    prog = json.loads(prog_path.read_text()) if prog_path.exists() else {"units_done": 0, "shards": 0, "done": False}
    train, holdout = units[: len(units) - holdout_units], units[len(units) - holdout_units:]
    (out / "units.txt").write_text("\n".join(u.replace("\n", " ") for u in train) + "\n")  # row i of the shards is line i
    if not (out / "holdout.npy").exists():
        _save(out / "holdout.npy", embedder.encode(holdout, batch_size=128))
        log(f"held-out: {len(holdout):,} units")
    t0, done0 = time.time(), prog["units_done"]
    while prog["units_done"] < len(train):
        s = prog["units_done"]
        chunk = train[s : s + shard_units]
        _save(out / f"shard_{prog['shards']:05d}.npy", embedder.encode(chunk, batch_size=128))
        prog["shards"] += 1
        prog["units_done"] = s + len(chunk)
        prog_path.write_text(json.dumps(prog))
        rate = (prog["units_done"] - done0) / max(time.time() - t0, 1e-9)
        log(f"shard {prog['shards']}: {prog['units_done']:,}/{len(train):,} units ({rate:,.0f} units/s)")
    prog["done"] = True
    prog_path.write_text(json.dumps(prog))
    return prog


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array.astype(np.float16))
    os.replace(tmp, path)
