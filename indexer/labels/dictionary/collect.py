"""Stage 1 of the dictionary build: activating and background contexts for every latent.

Reads a corpus with the reader + SAE (the same windows and precision as indexing) and keeps,
per latent, the ``per_latent`` documents where it fires most strongly (one context per document:
the window around its peak token), plus a random pool of background contexts with the set of
latents firing anywhere in them (so a latent's "non-activating" contexts can exclude the ones it
fires in). Also counts, per latent, the tokens it fires on and the documents it fires in.

Resumable: the state is checkpointed every ``checkpoint_every`` documents (an atomic rename), and
a restarted run skips the documents already read.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from indexer.labels.windows import snippet

CONTEXT_CHARS = 80  # characters either side of the peak token (~30 words in all; MiniLM cost grows with length)


@dataclass
class CollectState:
    """Everything stage 1 accumulates; pickled as one checkpoint."""

    d_sae: int
    per_latent: int
    docs_read: int = 0
    tokens_read: int = 0
    best_act: np.ndarray | None = None  # (d_sae, per_latent) activation, -1 = empty slot
    best_ctx: np.ndarray | None = None  # (d_sae, per_latent) context id
    contexts: dict[int, tuple[str, int, int, int]] = field(default_factory=dict)  # id -> (text, span start, span end, token id)
    next_ctx: int = 0
    fired_tokens: np.ndarray | None = None  # (d_sae,) token firings
    fired_docs: np.ndarray | None = None  # (d_sae,) documents with >= 1 firing
    background: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (context, latents firing in it)
    complete: bool = False  # the last run finished (max_docs read, or the corpus ended)
    corpus_ended: bool = False

    def __post_init__(self) -> None:
        if self.best_act is None:
            self.best_act = np.full((self.d_sae, self.per_latent), -1.0, np.float32)
            self.best_ctx = np.full((self.d_sae, self.per_latent), -1, np.int64)
            self.fired_tokens = np.zeros(self.d_sae, np.int64)
            self.fired_docs = np.zeros(self.d_sae, np.int64)


def read_texts(path: Path) -> Iterator[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                t = json.loads(line).get("text") or ""
                if t.strip():
                    yield t


def context_window(text: str, s: int, e: int, width: int = CONTEXT_CHARS) -> tuple[str, int, int]:
    """The text around [s, e) on word boundaries (:func:`indexer.labels.windows.snippet`); returns (window, s', e')."""
    win = snippet(text, [s, e], width)
    return win["text"].replace("\n", " "), win["span"][0], win["span"][1]


def collect(indexer, corpus: Path, state_path: Path, max_docs: int, per_latent: int = 16, n_background: int = 4000,
            batch_docs: int = 512, checkpoint_every: int = 1024, seed: int = 0) -> CollectState:
    sae = indexer.sae
    reader = indexer.reader
    state: CollectState
    if state_path.exists():
        state = pickle.loads(state_path.read_bytes())
    else:
        state = CollectState(d_sae=sae.d_sae, per_latent=per_latent)
    rng = random.Random(seed + state.docs_read)
    bg_every = max(1, max_docs // n_background)
    texts = read_texts(corpus)
    for _ in range(state.docs_read):  # resume: skip what was read
        next(texts, None)
    t0, last_ckpt = time.time(), state.docs_read
    batch: list[str] = []
    state.corpus_ended = True
    for text in texts:
        if state.docs_read + len(batch) >= max_docs:
            state.corpus_ended = False
            break
        batch.append(text)
        if len(batch) == batch_docs:
            _read_batch(batch, state, reader, sae, rng, bg_every)
            batch = []
            if state.docs_read - last_ckpt >= checkpoint_every:
                _save(state, state_path)
                last_ckpt = state.docs_read
                rate = (state.docs_read - 0) / max(time.time() - t0, 1e-6)
                print(f"collect: {state.docs_read:,} docs, {state.tokens_read:,} tokens, {len(state.contexts):,} contexts "
                      f"({rate:.1f} docs/s this run)", file=sys.stderr, flush=True)
    if batch:
        _read_batch(batch, state, reader, sae, rng, bg_every)
    state.complete = True
    _save(state, state_path)
    return state


def _save(state: CollectState, path: Path) -> None:
    live = set(np.unique(state.best_ctx[state.best_ctx >= 0]).tolist())
    state.contexts = {k: v for k, v in state.contexts.items() if k in live}
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(state, protocol=5))
    os.replace(tmp, path)


def _read_batch(texts: list[str], state: CollectState, reader, sae, rng: random.Random, bg_every: int) -> None:
    cand_lat, cand_act, cand_ctx = [], [], []
    toks = reader.tokenize(texts)
    for rb in reader.encode(texts):
        for d, h, offs in zip(rb.indices, rb.states, rb.offsets):
            if len(h) == 0:
                continue
            text = texts[d]
            with torch.inference_mode():
                v, i = sae.encode_topk_sparse(torch.from_numpy(h))
            v, i = v.float().numpy(), i.numpy()
            n, k = i.shape
            state.tokens_read += n
            flat_l, flat_v = i.reshape(-1), v.reshape(-1)
            pos = np.repeat(np.arange(n), k)
            ok = flat_v > 0
            flat_l, flat_v, pos = flat_l[ok], flat_v[ok], pos[ok]
            state.fired_tokens += np.bincount(flat_l, minlength=state.d_sae)
            # max-pool: each latent's peak in this document
            order = np.lexsort((-flat_v, flat_l))
            flat_l, flat_v, pos = flat_l[order], flat_v[order], pos[order]
            first = np.ones(len(flat_l), bool)
            first[1:] = flat_l[1:] != flat_l[:-1]
            lat, act, peak = flat_l[first], flat_v[first], pos[first]
            state.fired_docs[lat] += 1
            # only peaks that could enter a latent's top list get a context
            entering = act > state.best_act[lat].min(axis=1)
            ids = [t for t in toks[d]["ids"] if t not in reader.special_ids]
            for l_, a_, p_ in zip(lat[entering], act[entering], peak[entering]):
                s, e = int(offs[p_][0]), int(offs[p_][1])
                w, ws, we = context_window(text, s, e)
                cid = state.next_ctx
                state.next_ctx += 1
                state.contexts[cid] = (w, ws, we, int(ids[p_]) if p_ < len(ids) else -1)
                cand_lat.append(int(l_))
                cand_act.append(float(a_))
                cand_ctx.append(cid)
            # background: a random token's window and every latent firing inside that window
            if (state.docs_read + d) % bg_every == 0:
                p = rng.randrange(n)
                s, e = int(offs[p][0]), int(offs[p][1])
                w, ws, we = context_window(text, s, e)
                inside = (offs[:, 0] >= s - CONTEXT_CHARS) & (offs[:, 1] <= e + CONTEXT_CHARS)
                state.background.append((w, np.unique(i[inside][v[inside] > 0]).astype(np.int32)))
    state.docs_read += len(texts)
    if cand_lat:
        _merge(state, np.asarray(cand_lat), np.asarray(cand_act, np.float32), np.asarray(cand_ctx, np.int64))


def _merge(state: CollectState, lat: np.ndarray, act: np.ndarray, ctx: np.ndarray) -> None:
    """Merge candidate (latent, activation, context) rows into each latent's top list."""
    K = state.per_latent
    touched = np.unique(lat)
    old_l = np.repeat(touched, K)
    old_a = state.best_act[touched].reshape(-1)
    old_c = state.best_ctx[touched].reshape(-1)
    L = np.concatenate([old_l, lat])
    A = np.concatenate([old_a, act])
    C = np.concatenate([old_c, ctx])
    order = np.lexsort((-A, L))
    L, A, C = L[order], A[order], C[order]
    starts = np.searchsorted(L, touched)
    rank = np.arange(len(L)) - np.repeat(starts, np.diff(np.append(starts, len(L))))
    keep = rank < K
    rows = np.searchsorted(touched, L[keep])
    state.best_act[touched] = -1.0
    state.best_ctx[touched] = -1
    state.best_act[touched[rows], rank[keep]] = A[keep]
    state.best_ctx[touched[rows], rank[keep]] = C[keep]
