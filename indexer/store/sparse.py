"""A document's SAE vector as Qdrant returned it, read lazily."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class SparseMap(Mapping):
    """A document's SAE vector as read from Qdrant, with a read-only dict view.

    Why not a dict: a whole document has ~2,900 non-zero latents, and building dicts (or numpy
    arrays) for the ten hits of a search cost 1-4 ms of a ~10 ms search, while explanations only
    look up the query's ~100 latents: :meth:`lookup` bisects Qdrant's (sorted) index list."""

    __slots__ = ("_idx", "_val", "_dict", "_arrays", "_is_sorted")

    def __init__(self, indices, values):
        self._idx, self._val = indices, values  # as Qdrant returned them (lists, in its order)
        self._dict: dict[int, float] | None = None
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._is_sorted: bool | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(latent ids int64, activations float32) in Qdrant's order."""
        if self._arrays is None:
            self._arrays = (np.asarray(self._idx, dtype=np.int64), np.asarray(self._val, dtype=np.float32))
        return self._arrays

    def lookup(self, latents) -> np.ndarray:
        """Activation of each latent (0 where the document has none)."""
        from bisect import bisect_left

        idx, val = self._idx, self._val
        if self._is_sorted is None:  # Qdrant keeps sparse vectors sorted by index; a spot check, not a pass
            n = len(idx)
            probe = [idx[i] for i in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})] if n else []
            self._is_sorted = all(a < b for a, b in zip(probe, probe[1:]))
        out = np.zeros(len(latents), np.float32)
        if not self._is_sorted:
            d = self._d()
            for j, lat in enumerate(latents):
                out[j] = d.get(int(lat), 0.0)
            return out
        n = len(idx)
        for j, lat in enumerate(latents):
            p = bisect_left(idx, lat)
            if p < n and idx[p] == lat:
                out[j] = val[p]
        return out

    def _d(self) -> dict[int, float]:
        if self._dict is None:
            self._dict = dict(zip(map(int, self._idx), map(float, self._val)))
        return self._dict

    def __getitem__(self, key: int) -> float:
        return self._d()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._d()

    def __iter__(self):
        return iter(self._d())

    def __len__(self) -> int:
        return len(self._idx)

    def __eq__(self, other: object) -> bool:
        return self._d() == (dict(other) if isinstance(other, Mapping) else other)


def sparse_of(vector: Any, name: str = "sae") -> SparseMap | None:
    if not vector:
        return None
    v = vector.get(name) if isinstance(vector, dict) else None
    if v is None:
        return None
    if isinstance(v, dict):
        return SparseMap(v["indices"], v["values"])
    return SparseMap(v.indices, v.values)  # each attribute access converts the whole vector: once
