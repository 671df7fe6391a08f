"""Index manifest: what made the vectors (reader, layer, SAE, pooling).

Documents encoded by a different reader or SAE live in a different latent space; mixing them
would make every score meaningless. Adding to an index with another recipe is refused.
"""

from __future__ import annotations

from indexer.reader import ReaderConfig
from indexer.sae import SparseAutoencoder

MANIFEST_VERSION = 1


def build_manifest(reader_cfg: ReaderConfig, sae: SparseAutoencoder, sae_path: str, embedder: str, d_model: int) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "reader": {"model": reader_cfg.model, "layer": reader_cfg.layer, "max_tokens": reader_cfg.max_tokens, "d_model": d_model},
        "sae": {"path": sae_path, "hash": sae.content_hash(), "d_sae": sae.d_sae, "architecture": sae.architecture,
                "k": sae.cfg.get("k")},
        "pooling": "max",
        "embedder": embedder,
    }


class ManifestMismatch(ValueError):
    pass


def check_compatible(existing: dict, new: dict, index: str) -> None:
    """Raise a clear error when ``new`` would put incompatible vectors into ``index``."""
    problems = []
    for section, keys in (("reader", ("model", "layer", "max_tokens")), ("sae", ("hash", "d_sae")), ("embedder", None)):
        if keys is None:
            if existing.get(section) != new.get(section):
                problems.append(f"{section}: index has {existing.get(section)!r}, this run uses {new.get(section)!r}")
            continue
        for k in keys:
            a, b = existing.get(section, {}).get(k), new.get(section, {}).get(k)
            if a != b:
                problems.append(f"{section}.{k}: index has {a!r}, this run uses {b!r}")
    if existing.get("pooling") != new.get("pooling"):
        problems.append(f"pooling: index has {existing.get('pooling')!r}, this run uses {new.get('pooling')!r}")
    if problems:
        raise ManifestMismatch(
            f"index {index!r} was built with another recipe; refusing to mix vectors ("
            + "; ".join(problems) + "). Use a new --index name or `saedex drop --index " + index + "` first."
        )
