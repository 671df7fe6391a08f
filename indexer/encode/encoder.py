"""The model half of indexing: text -> reader hidden states -> SAE -> max-pooled sparse vector.

One class serves every caller that turns text into latents the way an index does: the ingest
pipeline (which adds payloads and writes), search's ``--expand`` phrases, the noise-floor reference
and the dictionary build. Writing to a store is not its business (:mod:`indexer.ingest.pipeline`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from indexer.core.errors import InputError
from indexer.encode.embedder import DEFAULT_EMBEDDER, get_embedder, same_embedder, unit_embedder
from indexer.encode.pooling import PooledDoc, encode_and_pool
from indexer.encode.reader import Reader, ReaderConfig, get_reader, set_threads
from indexer.encode.recipe import Recipe
from indexer.encode.sae import DEFAULT_SAE_DIR, SparseAutoencoder, load_sae, sae_dir, shipped_concept_sae
from indexer.encode.units import split_units

UNIT_BATCH = 16  # sentence units per MiniLM batch (every batch filled to this size: small, as most length groups are)


@dataclass
class EncodeCounts:
    """Token accounting of one or more encode calls (what an index report shows)."""

    tokens: int = 0
    padded_tokens: int = 0
    computed_tokens: int = 0  # positions run through the reader (BOS per window, overlap context)
    truncated_docs: int = 0
    repeated_texts: int = 0  # texts equal to one met earlier (in the call or recently): read once, vector copied


RECENT_TEXTS = 4096  # pooled vectors kept for texts met again (the same answer or prompt under many ids)


class Encoder:
    """Holds the reader and the SAE (each loaded once) and encodes texts exactly as a recipe says."""

    def __init__(self, reader_cfg: ReaderConfig | None = None, sae_path: str | None = None, embedder: str = DEFAULT_EMBEDDER,
                 sae_object=None, concept: SparseAutoencoder | None | str = "default"):
        """``concept``: the concept family's SAE (``"default"``: the shipped one, if any; None: token family only)."""
        set_threads()
        self.reader_cfg = reader_cfg or ReaderConfig()
        self.sae_path = str(sae_path or DEFAULT_SAE_DIR)
        self.sae = sae_object if sae_object is not None else load_sae(self.sae_path)
        self._reader: Reader | None = None
        self._recent: OrderedDict[str, PooledDoc] = OrderedDict()
        self._recent_lock = threading.Lock()
        self.embedder_name = embedder
        self.concept_path = "default" if isinstance(concept, str) and concept == "default" else None
        self.concept = shipped_concept_sae() if isinstance(concept, str) else concept
        if isinstance(concept, str) and concept != "default":
            self.concept, self.concept_path = load_sae(sae_dir(concept, "concept")), concept
        if self.concept is not None and self.concept.cfg.metadata.get("saedex_family") != "concept":
            raise InputError(f"--concept {concept}: not a concept-family SAE (train one with saedex train-sae --family concept)")
        if self.concept is not None and not same_embedder(unit_embedder(self.concept), embedder):
            get_embedder(unit_embedder(self.concept)).model  # a model not here fails now, before an index is made

    @classmethod
    def for_recipe(cls, recipe: Recipe, **inference: str | int):
        """An encoder that makes vectors exactly as ``recipe`` says (search's ``--like``/``expand``,
        a Ray worker). ``inference``: how fast, not what (precision, device, batch_tokens)."""
        r = recipe.reader
        cfg = ReaderConfig(model=r.model, layer=r.layer, max_tokens=r.max_tokens, **inference,
                           **{k: v for k, v in (("window", r.window), ("overlap", r.overlap)) if v is not None})
        concept = None if recipe.concept is None else (recipe.concept.folder or "default")
        return cls(cfg, recipe.sae.folder, recipe.embedder or DEFAULT_EMBEDDER, concept=concept)

    @classmethod
    def from_options(cls, sae: str | None = None, precision: str = "auto", device: str = "auto", batch_tokens: int = 2048,
                     concept: str = "default", **reader: int | str | None):
        """An encoder from command-line choices: reader settings not given (None) come from the
        SAE's metadata (the reader and layer it was trained on), then from the defaults. The SAE
        is loaded once. ReaderConfig validates every value, so a bad --layer fails before anything
        is written."""
        loaded = load_sae(sae or str(DEFAULT_SAE_DIR))
        meta = loaded.cfg.metadata
        given = {"model": meta.get("saedex_reader"), "layer": meta.get("saedex_layer")} | {
            k: v for k, v in reader.items() if v is not None}
        cfg = ReaderConfig(**{k: v for k, v in given.items() if v is not None}, precision=precision, device=device,
                           batch_tokens=batch_tokens)
        return cls(cfg, sae, sae_object=loaded, concept=None if concept == "none" else concept)

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            reader = get_reader(self.reader_cfg)
            if reader.d_model != self.sae.d_in:
                raise InputError(f"SAE expects d_in={self.sae.d_in} but reader {self.reader_cfg.model} layer "
                                 f"{self.reader_cfg.layer} has width {reader.d_model}")
            # The SAE's encoder matmul runs in the reader's precision, on its device.
            self.sae.set_precision(reader.precision, reader.device)
            self._reader = reader
        return self._reader

    def recipe(self) -> Recipe:
        return Recipe.build(self.reader_cfg, self.sae, self.sae_path if self.sae_path != str(DEFAULT_SAE_DIR) else "default",
                            self.embedder_name, self.sae.d_in, precision=self.reader.precision,
                            concept=self.concept, concept_path=self.concept_path)

    def encode_texts(self, texts: list[str], counts: EncodeCounts | None = None) -> list[PooledDoc]:
        """Reader + SAE + max-pooling, one pooled document per text, in order. A text met again
        (in this call, or among the last RECENT_TEXTS encoded) is read once: a document's vector
        does not depend on its batch neighbours (tests/test_ingest_hardening.py), so the copy is
        the vector a second reading would make. Corpora repeat texts under other ids (the same
        prompt to many models, a story run twice, A/B slices sharing documents)."""
        with self._recent_lock:
            known = {t: self._recent[t] for t in texts if t in self._recent}
            for t in known:
                self._recent.move_to_end(t)
        todo = list(dict.fromkeys(t for t in texts if t not in known))
        fresh = dict(zip(todo, self._encode_unique(todo, counts))) if todo else {}
        with self._recent_lock:
            self._recent.update(fresh)
            while len(self._recent) > RECENT_TEXTS:
                self._recent.popitem(last=False)
        if counts is not None:
            counts.repeated_texts += len(texts) - len(todo)
        return [fresh[t] if t in fresh else known[t] for t in texts]

    def clear_recent(self) -> None:
        """Forget the texts met so far (the next encode reads every text)."""
        with self._recent_lock:
            self._recent.clear()

    def _encode_unique(self, texts: list[str], counts: EncodeCounts | None) -> list[PooledDoc]:
        pooled: list = [None] * len(texts)
        for batch in self.reader.encode(texts):
            for i, p in zip(batch.indices, encode_and_pool(self.sae, batch.states, batch.offsets)):
                pooled[i] = p
            if counts is not None:
                counts.tokens += batch.n_tokens
                counts.padded_tokens += batch.n_padded
                counts.computed_tokens += batch.n_computed
                counts.truncated_docs += batch.truncated
        if self.concept is not None:
            pooled = [PooledDoc.join(t, c, self.sae.d_sae) for t, c in zip(pooled, self.encode_units(texts))]
        return pooled

    def encode_units(self, texts: list[str]) -> list[PooledDoc]:
        """The concept family: each text's sentence units embedded, SAE-encoded and max-pooled
        (a unit is the concept family's token; ``offsets`` are the units' character spans)."""
        spans = [np.asarray(split_units(t), np.int64).reshape(-1, 2) for t in texts]
        flat = [t[s:e] for t, sp in zip(texts, spans) for s, e in sp.tolist()]
        emb = get_embedder(unit_embedder(self.concept))  # its own model: it need not be the index's (MiniLM)
        # fixed-size batches: a document's vector must not depend on what it was indexed with
        vecs = emb.encode(flat, batch_size=UNIT_BATCH, fixed_batch=True) if flat else np.zeros((0, emb.dim), np.float32)
        cuts = np.cumsum([0] + [len(sp) for sp in spans])
        return encode_and_pool(self.concept, [vecs[a:b] for a, b in zip(cuts[:-1], cuts[1:])], spans)
