"""A BERT encoder's forward for one unpadded text, on weights packed once for oneDNN.

A query is one short text, and on one core its embedding was a third of a search's CPU (MiniLM:
~5 ms of ~15 on the demo index). Three quarters of that were the 36 linear layers, each of which,
called through ``nn.Linear``, re-lays its weight out for oneDNN on every call; with the weights
packed once (``mkldnn._reorder_linear_weight``), the query, key and value projections of a layer
fused into one product, and no attention mask (one text has no padding), the same encoder costs
~2.4 ms (compiled by TorchScript, off the GIL) and computes the same bits for texts of up to
:data:`LEAN_MAX_TOKENS` tokens (:class:`Routed` sends longer ones to the trace): every path built
from it is checked equal to the eager model on probe texts before it is used (:func:`verified`),
and anything else (another architecture, another precision whose packed kernel rounds
differently, no oneDNN) keeps the TorchScript trace.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Union

import torch
import torch.nn.functional as F


def _has_packed_linear() -> bool:
    """Whether this torch carries oneDNN's packed linear ops (a build without oneDNN has none)."""
    try:
        torch.ops.mkldnn._linear_pointwise
        torch.ops.mkldnn._reorder_linear_weight
    except (AttributeError, RuntimeError):
        return False
    return True


_ONEDNN_LINEAR = _has_packed_linear()
# The longest text (in tokens) the lean forward serves. Its packed products sum in the eager
# model's order only for so few rows on every CPU measured: on an AMX Xeon the 1,536-wide output
# projection changes its summation order past 32 rows (1-ulp differences from 33 tokens on), where
# an AMD EPYC stays exact at every length. Queries are shorter; longer texts take the other path.
LEAN_MAX_TOKENS = 32
_PACK_BATCH = 16  # the batch the packed layout is tuned for: a query's ~10 tokens


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_BATCH)


class LeanBert:
    """Token embeddings (1, T, H) of one unpadded text, as ``BertModel(...).last_hidden_state``."""

    def __init__(self, state: dict[str, torch.Tensor], heads: int, eps: float, keep_plain: bool = False):
        """``keep_plain``: keep the linear weights unpacked too, as :meth:`save` needs them; a forward
        that is only run drops them (MiniLM: 21 MB less held by a server)."""
        self.state, self.heads, self.eps = dict(state), heads, eps
        self.params: list[torch.Tensor] = []  # _PER_LAYER a layer, linear weights packed
        for i in range(int(state["n_layers"])):
            p = f"layer.{i}."
            for name in ("qkv", "attention_out", "intermediate", "out"):
                self.params += [_pack(state[p + name + ".weight"]), state[p + name + ".bias"]]
                if not keep_plain:
                    del self.state[p + name + ".weight"]
            for name in ("ln_attention", "ln_out"):
                self.params += [state[p + name + ".weight"], state[p + name + ".bias"]]
        self.savable = keep_plain

    @classmethod
    def from_model(cls, auto, keep_plain: bool = False) -> "LeanBert | None":
        """The lean forward of a transformers ``BertModel`` (absolute positions, GELU, eval), or
        None for any other model (MPNet, a decoder, relative positions) or without oneDNN;
        ``keep_plain`` where it is to be saved."""
        cfg = getattr(auto, "config", None)
        if (not _ONEDNN_LINEAR or not torch.backends.mkldnn.is_available() or type(auto).__name__ != "BertModel"
                or getattr(cfg, "position_embedding_type", "absolute") != "absolute" or cfg.hidden_act != "gelu"
                or getattr(cfg, "is_decoder", False)):
            return None
        e = auto.embeddings
        state = {"word": e.word_embeddings.weight, "position": e.position_embeddings.weight,
                 "token_type": e.token_type_embeddings.weight[0], "ln_embeddings.weight": e.LayerNorm.weight,
                 "ln_embeddings.bias": e.LayerNorm.bias, "n_layers": torch.tensor(len(auto.encoder.layer))}
        for i, layer in enumerate(auto.encoder.layer):
            a, p = layer.attention.self, f"layer.{i}."
            state[p + "qkv.weight"] = torch.cat([a.query.weight, a.key.weight, a.value.weight])
            state[p + "qkv.bias"] = torch.cat([a.query.bias, a.key.bias, a.value.bias])
            for name, mod in (("attention_out", layer.attention.output.dense), ("intermediate", layer.intermediate.dense),
                              ("out", layer.output.dense), ("ln_attention", layer.attention.output.LayerNorm),
                              ("ln_out", layer.output.LayerNorm)):
                state[p + name + ".weight"], state[p + name + ".bias"] = mod.weight, mod.bias
        state = {k: v.detach().clone() for k, v in state.items()}
        try:
            return cls(state, cfg.num_attention_heads, cfg.layer_norm_eps, keep_plain)
        except RuntimeError:  # a dtype oneDNN cannot pack here
            return None

    def save(self, path: Path) -> None:
        if not self.savable:
            raise ValueError("this lean forward dropped its plain weights: build it with keep_plain=True to save it")
        torch.save({"state": self.state, "heads": self.heads, "eps": self.eps}, str(path))

    @classmethod
    def load(cls, path: Path) -> "LeanBert":
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
        return cls(blob["state"], int(blob["heads"]), float(blob["eps"]))

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings of one text (``ids``: (1, T)); the mask must be all ones (no padding)."""
        if ids.shape[0] != 1 or not bool(mask.all()):
            raise ValueError("the lean forward reads one unpadded text")
        s = self.state
        return _scripted()(ids, s["word"], s["token_type"], s["position"], s["ln_embeddings.weight"], s["ln_embeddings.bias"],
                           self.params, self.heads, self.eps)


class Routed:
    """(ids, mask) -> token embeddings: the lean forward up to :data:`LEAN_MAX_TOKENS` tokens,
    ``longer`` (a trace or the eager model) past it."""

    def __init__(self, lean: LeanBert, longer):
        self.lean, self.longer = lean, longer

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lean(ids, mask) if ids.shape[1] <= LEAN_MAX_TOKENS else self.longer(ids, mask)


_PER_LAYER = 12  # qkv, attention out, intermediate, out (weight, bias each), then two layer norms (weight, bias)


def _forward(ids: torch.Tensor, word: torch.Tensor, token_type: torch.Tensor, position: torch.Tensor, ln_w: torch.Tensor,
             ln_b: torch.Tensor, params: List[torch.Tensor], heads: int, eps: float) -> torch.Tensor:
    """BertModel's forward for one unpadded text on packed weights (``params``: _PER_LAYER a layer)."""
    T = ids.size(1)
    h = F.embedding(ids[0], word) + token_type  # as BertEmbeddings: (words + token type) + positions
    h = h + position[:T]
    width = h.size(-1)
    h = F.layer_norm(h, [width], ln_w, ln_b, eps)
    head = width // heads
    none: List[Optional[Union[int, float, complex]]] = []
    for i in range(len(params) // 12):  # _PER_LAYER (TorchScript reads no module constants here)
        p = params[12 * i : 12 * i + 12]
        q, k, v = torch.ops.mkldnn._linear_pointwise(h, p[0], p[1], "none", none, "").split(width, dim=1)
        q = q.view(1, T, heads, head).transpose(1, 2)
        k = k.view(1, T, heads, head).transpose(1, 2)
        v = v.view(1, T, heads, head).transpose(1, 2)
        att = F.scaled_dot_product_attention(q, k, v, scale=head ** -0.5).transpose(1, 2).reshape(T, width)
        h = F.layer_norm(torch.ops.mkldnn._linear_pointwise(att, p[2], p[3], "none", none, "") + h, [width], p[8], p[9], eps)
        x = F.gelu(torch.ops.mkldnn._linear_pointwise(h, p[4], p[5], "none", none, ""))
        h = F.layer_norm(torch.ops.mkldnn._linear_pointwise(x, p[6], p[7], "none", none, "") + h, [width], p[10], p[11], eps)
    return h.unsqueeze(0)


@lru_cache(maxsize=1)
def _scripted():
    """:func:`_forward` compiled by TorchScript once per process (12 ms measured): it then runs without
    the GIL between its ops, so concurrent searches embed on both cores (769 vs 542 queries/s
    on two threads measured against the same forward in Python; 2.35 vs 3.08 ms on one)."""
    return torch.jit.script(_forward)


def verified(candidate, reference, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """True when ``candidate(ids, mask)`` equals ``reference(ids, mask)`` bit for bit on every input."""
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            return all(torch.equal(candidate(ids, mask), reference(ids, mask)) for ids, mask in inputs)
    except Exception:  # noqa: BLE001 - a forward that fails is not used
        return False
