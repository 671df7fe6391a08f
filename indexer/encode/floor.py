"""The pooling noise floor, written once: reference strengths per latent and the rule that uses them.

Max-pooling a TopK SAE over a whole document leaves thousands of weak latents per document, so
"the document has latent X" stops meaning much. The floor counts a latent in a document only where
its pooled activation reaches ``floor x`` the latent's typical document-level strength. "Typical"
is a property of the SAE, not of one index: an index-relative median moves as the index grows, so
stored vectors and pre-computed counts would go stale. So each SAE ships, beside its weights, each
latent's median max-pooled activation over the documents of a reference corpus where it fires
(``pooling_reference.npy``, float32, d_sae values; built by
``python -m indexer.labels.dictionary.reference``).

Measured on a planted test (whole BBC articles, a closing sentence in 10% of B): with presence =
any non-zero, no top-5 diff latent had the planted documents as its examples; at >= 0.5x the
median strength the sentence's own latent was in the top 5, all 5 examples planted.
Stored counts (the columnar copy), diff, NPMI and clustering all call :func:`above_floor`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from indexer.core.errors import InputError
from indexer.encode.encoder import Encoder
from indexer.encode.sae import sae_dir

REFERENCE_FILE = "pooling_reference.npy"
DEFAULT_FLOOR = 0.5
MAX_FLOOR = 10.0
COUNT_FLOORS = (0.0, 0.5)  # floors (x reference strength) whose per-dataset counts each columnar shard stores


class FloorError(InputError):
    pass


def check_floor(floor: float) -> None:
    if not 0 <= floor <= MAX_FLOOR:
        raise FloorError(f"--floor must be between 0 and {MAX_FLOOR:g}")


def above_floor(values: np.ndarray, latents: np.ndarray, reference: np.ndarray | None, floor: float,
                threshold: float = 0.0) -> np.ndarray:
    """Which pooled activations count as the latent being present: above ``threshold`` and at
    >= ``floor`` x the latent's reference strength (no floor without a reference). The one rule
    behind stored counts, diff, NPMI and clustering."""
    keep = np.asarray(values) > threshold
    if floor > 0 and reference is not None:
        keep &= np.asarray(values) >= floor * reference[np.asarray(latents)]
    return keep


def apply_floor(X: sp.csr_matrix, reference: np.ndarray, floor: float) -> sp.csr_matrix:
    """A document x latent matrix without its activations below the floor."""
    X = X.copy()
    X.data[~above_floor(X.data, X.indices, reference, floor, threshold=-np.inf)] = 0.0
    X.eliminate_zeros()
    return X


def floor_key(f: float) -> str:
    """The name of the stored per-dataset counts at floor ``f`` (a columnar shard's count arrays)."""
    return f"present_at_{f:g}".replace(".", "_")


def load_reference(sae_dir: str | Path, d_sae: int) -> np.ndarray | None:
    """The SAE's reference strengths, or None when the SAE ships none (then no floor is applied)."""
    path = Path(sae_dir) / REFERENCE_FILE
    if not path.exists():
        return None
    ref = np.load(path, allow_pickle=False).astype(np.float32)
    if ref.shape != (d_sae,):
        raise InputError(f"{path}: shape {ref.shape} does not match the SAE's d_sae={d_sae}")
    return ref


def reference_for(recipe) -> np.ndarray | None:
    """The reference strengths of the SAEs an index's recipe names (one per latent of both
    families; a concept SAE shipping none gets 0: no floor for its latents), or None."""
    path, d_sae = recipe.sae.path, recipe.sae.d_sae
    if not path:
        return None
    try:
        ref = load_reference(sae_dir(path), d_sae)
        if ref is None or recipe.concept is None:
            return ref
        concept = load_reference(sae_dir(recipe.concept.path, "concept"), recipe.concept.d_sae)
        return np.concatenate([ref, concept if concept is not None else np.zeros(recipe.concept.d_sae, np.float32)])
    except (OSError, ValueError):
        return None


def compute_reference(encoder: Encoder, texts: list[str], batch_docs: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Median max-pooled activation per latent over the documents where it fires, and how many
    documents that median rests on (latents that never fired get 0: no floor for them)."""
    d_sae = encoder.sae.d_sae
    lat_chunks, val_chunks = [], []
    t0, done = time.time(), 0
    for s in range(0, len(texts), batch_docs):
        chunk = texts[s : s + batch_docs]
        for doc in encoder.encode_texts(chunk):
            lat_chunks.append(doc.indices.astype(np.int32))
            val_chunks.append(doc.values.astype(np.float32))
        done += len(chunk)
        print(f"reference: {done}/{len(texts)} docs ({done / max(time.time() - t0, 1e-6):.1f} docs/s)", file=sys.stderr, flush=True)
    lat = np.concatenate(lat_chunks)
    val = np.concatenate(val_chunks)
    order = np.lexsort((val, lat))
    lat, val = lat[order], val[order]
    starts = np.searchsorted(lat, np.arange(d_sae))
    ends = np.searchsorted(lat, np.arange(d_sae), side="right")
    n = ends - starts
    med = np.zeros(d_sae, np.float32)
    has = n > 0
    mid = starts[has] + (n[has] - 1) // 2
    med[has] = val[mid]
    return med, n
