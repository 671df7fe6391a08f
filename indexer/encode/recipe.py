"""What made an index's vectors (the :class:`Recipe`) and what changes as it grows (:class:`IndexState`).

Documents encoded by a different reader, window or SAE live in a different latent space; mixing
them would make every score meaningless. The recipe is fixed when an index is created and
compared on every ingest and import; the state (datasets, how many documents the latent
statistics cover, the write stamps) changes with every write, through :func:`update_state`
only. Both are typed with symmetric ``to_dict``/``from_dict`` (as sae-lens does for its SAE
configs) and stored together as the index's manifest, one flat JSON object - the on-disk layout
of manifest version 2, so existing indexes read unchanged.

Indexes written by an older saedex (version 1: documents cut at 128 tokens) are refused with
the commands that rebuild them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from indexer.core.errors import ConflictError, InputError

RECIPE_VERSION = 2  # 2: whole documents read in windows (reader.window/overlap, max_tokens 4,096)


class ManifestMismatch(ConflictError):
    pass


class OutdatedIndex(ManifestMismatch):
    """An index built by an older saedex whose vectors cannot be mixed with (or read like) today's."""


class IncompleteRecipe(ManifestMismatch):
    """A recipe record without a field every recipe has (a hand-made Parquet file, a damaged manifest)."""


def _pick(cls, d: dict) -> dict:
    """The keys of ``d`` that are fields of dataclass ``cls`` (unknown keys are ignored: a
    newer saedex may record more)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (d or {}).items() if k in names}


@dataclass(frozen=True)
class ReaderRecipe:
    model: str
    layer: int
    max_tokens: int = 128
    window: int | None = None
    overlap: int | None = None
    d_model: int | None = None

    COMPARED = ("model", "layer", "max_tokens", "window", "overlap")


@dataclass(frozen=True)
class SaeRecipe:
    path: str | None  # "default" (the shipped SAE), a folder, or release:id
    hash: str | None
    d_sae: int
    architecture: str | None = None
    k: int | None = None

    COMPARED = ("hash", "d_sae")

    @classmethod
    def of(cls, sae, path: str) -> "SaeRecipe":
        return cls(path=path, hash=sae.content_hash(), d_sae=sae.d_sae, architecture=sae.architecture, k=getattr(sae.cfg, "k", None))

    @property
    def folder(self) -> str | None:
        """The path to load the SAE from (None: the shipped one)."""
        return None if self.path in (None, "default") else self.path


@dataclass(frozen=True)
class Inference:
    """How fast the vectors were made, not what they are (bf16 agrees with fp32 at pooled cosine 0.999; not compared)."""

    precision: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Recipe:
    reader: ReaderRecipe
    sae: SaeRecipe
    embedder: str | None
    pooling: str = "max"
    inference: Inference = field(default_factory=Inference)
    version: int = RECIPE_VERSION
    # The concept family (an SAE over sentence embeddings, :mod:`indexer.encode.units`); its latents
    # follow the token SAE's in one id space: concept latent j is latent ``sae.d_sae + j``. None: an
    # index of the token family only (every index built before the family existed).
    concept: SaeRecipe | None = None

    @property
    def n_latents(self) -> int:
        """Width of a document's latent vector: both families."""
        return self.sae.d_sae + (self.concept.d_sae if self.concept is not None else 0)

    def family_of(self, latent: int) -> str:
        return "token" if latent < self.sae.d_sae else "concept"

    def family_range(self, family: str) -> range:
        """Latent ids of ``family`` (``all``: both)."""
        if family == "token":
            return range(0, self.sae.d_sae)
        if family == "concept":
            return range(self.sae.d_sae, self.n_latents)
        return range(0, self.n_latents)

    @classmethod
    def build(cls, reader_cfg, sae, sae_path: str, embedder: str, d_model: int, precision: str | None = None,
              concept=None, concept_path: str | None = None) -> "Recipe":
        return cls(reader=ReaderRecipe(**reader_cfg.recipe(), d_model=d_model), sae=SaeRecipe.of(sae, sae_path),
                   embedder=embedder, inference=Inference(precision or reader_cfg.precision, reader_cfg.device),
                   concept=SaeRecipe.of(concept, concept_path) if concept is not None else None)

    @classmethod
    def external(cls, d_sae: int, sae_path: str | None = None, embedder: str | None = None) -> "Recipe":
        """The recipe of vectors made outside saedex (synthetic benchmarks, another pipeline's
        Parquet): the reader is unknown, so such an index takes no new text, only imports."""
        return cls(reader=ReaderRecipe(model="external", layer=0), sae=SaeRecipe(path=sae_path, hash=None, d_sae=d_sae),
                   embedder=embedder)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, index: str = "?") -> "Recipe":
        """Read a recipe (a manifest, or a Parquet file's metadata), refusing other versions and
        naming a missing field."""
        check_version(d, index)
        try:
            return cls(reader=ReaderRecipe(**_pick(ReaderRecipe, d["reader"])), sae=SaeRecipe(**_pick(SaeRecipe, d["sae"])),
                       embedder=d.get("embedder"), pooling=d.get("pooling", "max"),
                       inference=Inference(**_pick(Inference, d.get("inference") or {})), version=int(d.get("version", 1)),
                       concept=SaeRecipe(**_pick(SaeRecipe, d["concept"])) if d.get("concept") else None)
        except (KeyError, TypeError) as e:
            raise IncompleteRecipe(f"index {index!r}: its recipe is incomplete ({e}); rebuild the index") from None

    def mismatches(self, other: "Recipe") -> list[str]:
        """What differs between two recipes in ways that change vectors."""
        problems = []
        for section, keys in (("reader", ReaderRecipe.COMPARED), ("sae", SaeRecipe.COMPARED)):
            for k in keys:
                a, b = getattr(getattr(self, section), k), getattr(getattr(other, section), k)
                if a != b:
                    problems.append(f"{section}.{k}: index has {a!r}, this run uses {b!r}")
        a, b = self.concept, other.concept
        if (a is None) != (b is None) or (a is not None and any(getattr(a, k) != getattr(b, k) for k in SaeRecipe.COMPARED)):
            has = lambda r: f"concept SAE {r.hash}" if r is not None else "no concept family"  # noqa: E731
            problems.append(f"concept: index has {has(a)}, this run uses {has(b)}")
        for k in ("embedder", "pooling"):
            if getattr(self, k) != getattr(other, k):
                problems.append(f"{k}: index has {getattr(self, k)!r}, this run uses {getattr(other, k)!r}")
        return problems

    def require_compatible(self, new: "Recipe", index: str) -> None:
        """Raise a clear error when ``new`` would put incompatible vectors into ``index``."""
        problems = self.mismatches(new)
        if problems:
            raise ManifestMismatch(
                f"index {index!r} was built with another recipe; refusing to mix vectors (" + "; ".join(problems)
                + f"). Use a new --index name or `saedex drop --index {index}` first.")


@dataclass
class IndexState:
    """What changes as the index grows. ``generation`` is set when the index is created,
    ``revision`` on every write (see :meth:`indexer.store.Store.write_manifest`)."""

    datasets: list[str] = field(default_factory=list)
    latent_stats_docs: int = 0
    generation: str | None = None
    revision: str | None = None
    prompt_vector: bool = False  # the store declares the prompt view's vector (indexes created since views exist)
    two_view: bool = False  # some record has a prompt: the prompt view has data

    @classmethod
    def from_dict(cls, d: dict) -> "IndexState":
        return cls(datasets=list(d.get("datasets") or []), latent_stats_docs=int(d.get("latent_stats_docs") or 0),
                   generation=d.get("generation"), revision=d.get("revision"),
                   prompt_vector=bool(d.get("prompt_vector")), two_view=bool(d.get("two_view")))

    def require_view(self, view: str, index: str) -> None:
        """A prompt-view analysis of an index without prompts is a mistake: say so in one line."""
        if view == "prompt" and not self.two_view:
            raise InputError(f"index {index!r} has no prompts (index a file with --prompt-field FIELD to add the prompt view)")

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Manifest:
    recipe: Recipe
    state: IndexState

    def to_dict(self) -> dict:
        return self.recipe.to_dict() | self.state.to_dict()

    @classmethod
    def from_dict(cls, d: dict, index: str = "?") -> "Manifest":
        return cls(Recipe.from_dict(d, index), IndexState.from_dict(d))


def check_version(d: dict, index: str) -> None:
    """Refuse indexes from an older recipe generation, saying how to rebuild them."""
    version = int(d.get("version", 1))
    if version < RECIPE_VERSION:
        raise OutdatedIndex(
            f"index {index!r} was built by an older saedex (manifest version {version}: documents cut at "
            f"{(d.get('reader') or {}).get('max_tokens', 128)} tokens, no windowing); rebuild it with "
            f"`saedex drop --index {index}` and then `saedex index FILE --index {index}` on the same files")
    if version > RECIPE_VERSION:
        raise OutdatedIndex(f"index {index!r} was built by a newer saedex (manifest version {version}); upgrade saedex")


def read_manifest(store, index: str | None = None) -> Manifest | None:
    """The store's manifest, typed (None: no index)."""
    d = store.read_manifest()
    return None if d is None else Manifest.from_dict(d, index or store.name)


def create_manifest(store, recipe: Recipe) -> Manifest:
    manifest = Manifest(recipe, IndexState(prompt_vector=True))
    write_manifest(store, manifest)
    return manifest


def write_manifest(store, manifest: Manifest) -> None:
    store.write_manifest(manifest.to_dict())


def update_state(store, **changes: Any) -> IndexState:
    """The one writer of index state: re-read the manifest, set ``changes`` (``add_dataset=NAME``
    appends to ``datasets`` if new), write it back. Callers hold the index's writer lock."""
    manifest = read_manifest(store)
    if manifest is None:
        raise ConflictError(f"index {store.name!r} has no manifest")
    state = manifest.state
    for key, value in changes.items():
        if key == "add_dataset":
            if value in state.datasets:
                continue
            state.datasets.append(value)
        elif hasattr(state, key) and key not in ("generation", "revision"):
            setattr(state, key, value)
        else:
            raise TypeError(f"unknown index state field {key!r}")
    write_manifest(store, manifest)
    return state
