"""The concept dictionary on disk, beside the SAE it describes.

``dictionary.json``: per latent label, kind (concept | lexical), quality in [0, 1], description and
evidence, plus the build record; ``dictionary.npz``: fp16 directions and label vectors (the index
embedder's space, MiniLM: where queries are matched), and for a concept SAE trained on another
embedder's units its decoder rows in that embedder's space (``unit_directions``). The SAE's
content hash is recorded, so a dictionary is never applied to other weights.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

JSON_NAME, NPZ_NAME = "dictionary.json", "dictionary.npz"


@dataclass
class Dictionary:
    sae_hash: str
    latents: dict[int, dict]  # latent -> {label, kind, quality, description, ...}
    directions: np.ndarray  # (d_sae, dim) float32, unit rows (zero where unknown)
    label_vecs: np.ndarray  # (d_sae, dim) float32
    build: dict
    # A concept SAE over another embedder's units (build["embedder"]): its decoder rows in that
    # space; ``directions`` then hold its top units' contrastive direction in the index embedder's.
    unit_directions: np.ndarray | None = None

    @property
    def own_embedder(self) -> str | None:
        """The model a concept SAE's units were embedded with, where it is not the index's (else None)."""
        return self.build.get("embedder") if self.unit_directions is not None else None

    @property
    def space_directions(self) -> np.ndarray:
        """The latents' directions in the space their units were embedded in (the SAE's own)."""
        return self.directions if self.unit_directions is None else self.unit_directions

    def entry(self, latent: int) -> dict | None:
        return self.latents.get(int(latent))

    def quality(self) -> np.ndarray:
        q = np.zeros(self.directions.shape[0], np.float32)
        for l, e in self.latents.items():
            q[l] = e["quality"]
        return q


def save_dictionary(sae_dir: Path, d: dict, sae) -> None:
    sae_dir = Path(sae_dir)
    meta = {"sae_hash": sae.content_hash(), "build": d.get("build", {}),
            "latents": {str(k): v for k, v in sorted(d["latents"].items())}}
    (sae_dir / JSON_NAME).write_text(json.dumps(meta, ensure_ascii=False, separators=(",", ":")))
    extra = {"unit_directions": d["unit_directions"].astype(np.float16)} if d.get("unit_directions") is not None else {}
    np.savez_compressed(sae_dir / NPZ_NAME, directions=d["directions"].astype(np.float16),
                        label_vecs=d["label_vecs"].astype(np.float16), **extra)


_cache: dict[str, Dictionary | None] = {}
_lock = threading.Lock()


def load_dictionary(sae_dir: str | Path, sae_hash: str | None = None) -> Dictionary | None:
    """The dictionary shipped beside ``sae_dir`` (cached per process), or None when there is none
    or it was built for other weights."""
    key = str(Path(sae_dir).resolve()) if Path(str(sae_dir)).exists() else str(sae_dir)
    with _lock:
        if key not in _cache:
            _cache[key] = _read(Path(key))
        d = _cache[key]
    if d is not None and sae_hash is not None and d.sae_hash != sae_hash:
        return None
    return d


def _read(sae_dir: Path) -> Dictionary | None:
    j, z = sae_dir / JSON_NAME, sae_dir / NPZ_NAME
    if not j.exists() or not z.exists():
        return None
    meta = json.loads(j.read_text(encoding="utf-8"))
    arrays = np.load(z)
    return Dictionary(sae_hash=meta["sae_hash"], latents={int(k): v for k, v in meta["latents"].items()},
                      directions=np.nan_to_num(arrays["directions"].astype(np.float32)),
                      label_vecs=np.nan_to_num(arrays["label_vecs"].astype(np.float32)),
                      build=meta.get("build", {}),
                      unit_directions=np.nan_to_num(arrays["unit_directions"].astype(np.float32)) if "unit_directions" in arrays else None)
