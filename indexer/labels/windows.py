"""Text windows around a latent's firing tokens, and their sentence embeddings.

Three widths, each for one reader: ``snippet`` (~90 characters each side, word-aligned) is what a
person reads in an example; ``short_window`` (four words each side) is what the embedder reads
for a latent's snippet vector and for embedding label quality; the dictionary build's context
window reuses ``snippet``. Window vectors are cached per index (:class:`WindowCache`).
"""

from __future__ import annotations

import json

import numpy as np

from indexer.store import Store

N_SNIPPETS = 3  # snippet embedding dominates refresh time; 3 short windows per latent


def snippet(text: str, span: list[int], width: int = 90) -> dict:
    """A window of ``text`` around ``span`` with the span's position inside the window."""
    s, e = span
    a, b = max(0, s - width), min(len(text), e + width)
    # widen to word boundaries so snippets do not start mid-word
    while a > 0 and not text[a - 1].isspace() and s - a < width + 20:
        a -= 1
    while b < len(text) and not text[b].isspace() and b - e < width + 20:
        b += 1
    return {"text": text[a:b], "span": [s - a, e - a]}


def short_window(text: str, span: list[int], words: int = 4) -> str:
    s, e = span
    left = text[:s].split()[-words:]
    right = text[e:].split()[:words]
    return " ".join(left + [text[s:e].strip()] + right)


def example_windows(examples: list[dict], n: int) -> list[tuple[tuple, str]]:
    """(cache key, short window) of the first ``n`` examples that have a firing span."""
    out = []
    for ex in examples:
        if ex.get("span") is None:
            continue
        out.append(((ex["doc_id"], tuple(ex.get("doc_span") or ())), short_window(ex["text"], ex["span"])))
        if len(out) == n:
            break
    return out


class WindowCache:
    """MiniLM vectors of example windows, keyed by (document, span), kept per index.

    Identical windows are embedded once, and an incremental ingest only embeds windows it has not
    seen. One refresh loads the file once and writes it once (:meth:`save`), however many
    lookups it makes (the concept check and the snippet vectors both read it)."""

    def __init__(self, store: Store | None, name: str = "snippet_cache.npz"):
        """``name``: one file per embedder (the concept family's own model keeps ``unit_cache.npz``)."""
        self.path = store.cache_file(name) if store is not None else None
        self.vectors = load_snippet_cache(self.path) if self.path is not None else {}
        self.dirty = False

    def save(self) -> None:
        if self.dirty and self.path is not None:
            save_snippet_cache(self.path, self.vectors)
            self.dirty = False


def window_vectors(windows: dict[tuple, str], emb, progress: bool, window_cache: WindowCache) -> dict[tuple, np.ndarray]:
    """MiniLM vectors of ``windows`` (key -> text), embedding only those not cached yet."""
    if not windows:
        return {}
    cache = window_cache.vectors
    todo = [k for k in windows if k not in cache]
    if todo:
        desc = f"embed latent snippets ({len(windows) - len(todo):,} cached)" if progress else None
        vecs = emb.encode([windows[k] for k in todo], batch_size=256, progress=desc)
        for k, v in zip(todo, vecs):
            cache[k] = v.astype(np.float16)
        window_cache.dirty = True
    return {k: cache[k].astype(np.float32) for k in windows}


def snippet_vectors(items: list[tuple[int, list[dict]]], emb, progress: bool, window_cache: WindowCache) -> dict[int, np.ndarray]:
    """Mean embedding of each latent's top snippets (what the latent *does*, for query matching)."""
    per_latent = {latent: example_windows(examples, N_SNIPPETS) for latent, examples in items}
    per_latent = {l: w for l, w in per_latent.items() if len(w) >= 2}
    vecs = window_vectors({k: t for ws in per_latent.values() for k, t in ws}, emb, progress, window_cache)
    out = {}
    for latent, ws in per_latent.items():
        v = np.mean([vecs[k] for k, _ in ws], axis=0)
        out[latent] = v / max(np.linalg.norm(v), 1e-8)
    return out


def _snippet_key(key: tuple) -> str:
    return json.dumps([key[0], list(key[1])], separators=(",", ":"))


def load_snippet_cache(path) -> dict[tuple, np.ndarray]:
    """The snippet-embedding cache: an ``.npz`` of JSON keys and fp16 rows (never a pickle, so a
    file planted in an index folder cannot run code)."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            keys, vecs = z["keys"].tolist(), z["vectors"]
        out = {}
        for k, v in zip(keys, vecs):
            doc, span = json.loads(k)
            out[(doc, tuple(span))] = v
        return out
    except Exception:  # noqa: BLE001 - a broken cache is rebuilt
        return {}


def save_snippet_cache(path, cache: dict[tuple, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(cache)
    dim = len(next(iter(cache.values()))) if cache else 0
    vecs = np.stack([cache[k] for k in keys]).astype(np.float16) if keys else np.zeros((0, dim), np.float16)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, keys=np.array([_snippet_key(k) for k in keys], dtype=str), vectors=vecs)
    tmp.replace(path)
