"""Index manifest: what made the vectors (reader, layer, windowing, SAE, pooling).

Documents encoded by a different reader, window or SAE live in a different latent space; mixing
them would make every score meaningless. Adding to an index with another recipe is refused, and
indexes written by an older saedex (version 1: documents cut at 128 tokens) are refused with the
commands that rebuild them.
"""

from __future__ import annotations

from indexer.errors import ConflictError
from indexer.reader import ReaderConfig
from indexer.sae import SparseAutoencoder

MANIFEST_VERSION = 2  # 2: whole documents read in windows (reader.window/overlap, max_tokens 4,096)


class ManifestMismatch(ConflictError):
    pass


class OutdatedIndex(ManifestMismatch):
    """An index built by an older saedex whose vectors cannot be mixed with (or read like) today's."""


def build_manifest(reader_cfg: ReaderConfig, sae: SparseAutoencoder, sae_path: str, embedder: str, d_model: int,
                   precision: str | None = None) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "reader": reader_cfg.recipe() | {"d_model": d_model},
        # How fast the vectors were made (bf16 agrees with fp32 at pooled cosine 0.999; not compared).
        "inference": {"precision": precision or reader_cfg.precision, "device": reader_cfg.device},
        "sae": {"path": sae_path, "hash": sae.content_hash(), "d_sae": sae.d_sae, "architecture": sae.architecture,
                "k": sae.cfg.get("k")},
        "pooling": "max",
        "embedder": embedder,
    }


def check_version(manifest: dict, index: str) -> None:
    """Refuse indexes from an older recipe generation, saying how to rebuild them."""
    version = int(manifest.get("version", 1))
    if version < MANIFEST_VERSION:
        raise OutdatedIndex(
            f"index {index!r} was built by an older saedex (manifest version {version}: documents cut at "
            f"{manifest.get('reader', {}).get('max_tokens', 128)} tokens, no windowing); rebuild it with "
            f"`saedex drop --index {index}` and then `saedex index FILE --index {index}` on the same files")
    if version > MANIFEST_VERSION:
        raise OutdatedIndex(f"index {index!r} was built by a newer saedex (manifest version {version}); upgrade saedex")


def check_compatible(existing: dict, new: dict, index: str) -> None:
    """Raise a clear error when ``new`` would put incompatible vectors into ``index``."""
    check_version(existing, index)
    problems = []
    for section, keys in (("reader", ("model", "layer", "max_tokens", "window", "overlap")), ("sae", ("hash", "d_sae")),
                          ("embedder", None)):
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
