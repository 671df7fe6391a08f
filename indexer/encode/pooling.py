"""Max-pool token-level SAE codes into one sparse vector per document.

Besides each latent's max activation we keep *where* it peaked (the token index), so every
search hit and every latent example can show the text span that made the latent fire. Token
positions and token character offsets are stored compactly in the payload (base64 int32).

The concept family pools the same way over a document's sentence units (:func:`encode_and_pool`
takes any rows with their character spans); in a document holding both families a concept
latent's peak is stored as ``-(unit + 1)``, and the unit spans beside the token offsets
(``_units``), so :func:`fire_spans` shows the firing sentence.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import torch

from indexer.encode.sae import SparseAutoencoder


@dataclass
class PooledDoc:
    indices: np.ndarray  # latent ids, ascending
    values: np.ndarray  # max activation per latent
    argmax_token: np.ndarray  # token position of that max (concept latents: -(unit + 1))
    offsets: np.ndarray  # (n_tokens, 2) char spans of the content tokens
    unit_spans: np.ndarray | None = None  # (n_units, 2) char spans of the sentence units (concept family)

    @staticmethod
    def join(tokens: "PooledDoc", concepts: "PooledDoc", offset: int) -> "PooledDoc":
        """One document's token-family and concept-family pooling as one vector (concept latent j is ``offset + j``)."""
        return PooledDoc(np.concatenate([tokens.indices, concepts.indices + offset]), np.concatenate([tokens.values, concepts.values]),
                         np.concatenate([tokens.argmax_token, -(concepts.argmax_token + 1)]), tokens.offsets,
                         np.asarray(concepts.offsets, np.int64).reshape(-1, 2))


def pack(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=np.int32).tobytes()).decode("ascii")


def unpack(s: str, cols: int = 1) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(s), dtype=np.int32)
    return a.reshape(-1, cols) if cols > 1 else a


ROW_BLOCK = 64


def _padded_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` with zero rows appended up to a multiple of ROW_BLOCK. A CPU matmul with only a few
    rows takes another kernel whose last bits differ (measured: 1-11 rows of the concept SAE's
    fp32 matmul on an AMD EPYC), so a short document encoded alone would get a vector a few ulps
    off the one it gets in a batch; in whole blocks a row's result does not depend on its neighbours."""
    pad = -len(x) % ROW_BLOCK
    return torch.cat([x, x.new_zeros(pad, x.shape[1])]) if pad else x


def encode_and_pool(sae: SparseAutoencoder, states: list[np.ndarray], offsets: list[np.ndarray], batch_tokens: int = 4096) -> list[PooledDoc]:
    """SAE-encode the tokens of several documents at once and max-pool per document."""
    lengths = [len(s) for s in states]
    if sum(lengths) == 0:
        return [PooledDoc(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64), o) for o in offsets]
    x = torch.from_numpy(np.concatenate([s for s in states if len(s)]).astype(np.float32, copy=False))
    vals_l, idx_l = [], []
    with torch.inference_mode():
        for s in range(0, len(x), batch_tokens):
            rows = x[s : s + batch_tokens]
            v, i = sae.encode_topk_sparse(_padded_rows(rows))
            vals_l.append(v[: len(rows)].float().cpu())
            idx_l.append(i[: len(rows)].cpu())
    vals = torch.cat(vals_l).numpy()
    idx = torch.cat(idx_l).numpy()
    k = idx.shape[1]
    out: list[PooledDoc] = []
    start = 0
    for n, off in zip(lengths, offsets):
        v = vals[start : start + n].reshape(-1)
        i = idx[start : start + n].reshape(-1)
        tok = np.repeat(np.arange(n), k)
        start += n
        keep = v > 0
        v, i, tok = v[keep], i[keep], tok[keep]
        if len(v) == 0:
            out.append(PooledDoc(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64), off))
            continue
        order = np.lexsort((-v, i))  # by latent, then by activation descending
        i, v, tok = i[order], v[order], tok[order]
        first = np.ones(len(i), dtype=bool)
        first[1:] = i[1:] != i[:-1]
        out.append(PooledDoc(i[first].astype(np.int64), v[first].astype(np.float32), tok[first].astype(np.int64), off))
    return out


SpanArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # (latent, peak) rows, token spans, unit spans


SPAN_KEYS = ("_fires", "_offsets", "_units")  # a text's payload keys (the store's schema names a prompt's)


def span_arrays(payload: dict, keys: tuple[str, str, str] = SPAN_KEYS) -> SpanArrays | None:
    """A stored text's firing rows, token spans and unit spans, decoded (None: none stored);
    ``keys``: where that text's are (a two-view record's prompt has its own)."""
    fires, offsets, units = keys
    if not payload.get(fires) or offsets not in payload:
        return None
    unit_spans = unpack(payload[units], 2) if payload.get(units) else np.zeros((0, 2), np.int32)
    return unpack(payload[fires], 2), unpack(payload[offsets], 2), unit_spans


def spans_in(arrays: SpanArrays | None, latents: list[int]) -> dict[int, list[int]]:
    """Character span [start, end] of the token (token family) or sentence (concept family) where
    each latent peaks. ``_fires`` rows are sorted by latent id (pooling emits ascending ids), so
    lookups are binary searches rather than a dict built per call."""
    if arrays is None:
        return {}
    fires, offs, units = arrays
    want = np.asarray([int(x) for x in latents], dtype=np.int64)
    pos = np.searchsorted(fires[:, 0], want)
    out = {}
    for lat, p in zip(want.tolist(), pos.tolist()):
        if p < len(fires) and fires[p, 0] == lat:
            t = int(fires[p, 1])
            if 0 <= t < len(offs):
                out[lat] = [int(offs[t][0]), int(offs[t][1])]
            elif t < 0 and -t - 1 < len(units):
                out[lat] = [int(units[-t - 1][0]), int(units[-t - 1][1])]
    return out


def fire_spans(payload: dict, latents: list[int], keys: tuple[str, str, str] = SPAN_KEYS) -> dict[int, list[int]]:
    """:func:`spans_in` of a stored text's payload (this runs for every example of every latent)."""
    return spans_in(span_arrays(payload, keys), latents)