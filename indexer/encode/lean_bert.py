"""A BERT encoder's forward for one unpadded text, on weights packed once for oneDNN.

A query is one short text, and on one core its embedding was a third of a search's CPU (MiniLM:
~5 ms of ~15 on the demo index). Three quarters of that were the 36 linear layers, each of which,
called through ``nn.Linear``, re-lays its weight out for oneDNN on every call; with the weights
packed once (``mkldnn._reorder_linear_weight``), the query, key and value projections of a layer
fused into one product, and no attention mask (one text has no padding), the same encoder costs
~3 ms and computes the same bits: every path built from it is checked equal to the eager model on
probe texts before it is used (:func:`verified`), and anything else (another architecture,
another precision whose packed kernel rounds differently, no oneDNN) keeps the TorchScript trace.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F



def _linear_op():
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return None


_LINEAR = _linear_op()
_PACK_BATCH = 16  # the batch the packed layout is tuned for: a query's ~10 tokens


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_BATCH)


class LeanBert:
    """Token embeddings (1, T, H) of one unpadded text, as ``BertModel(...).last_hidden_state``."""

    def __init__(self, state: dict[str, torch.Tensor], heads: int, eps: float):
        self.state, self.heads, self.eps = state, heads, eps
        self.layers = []
        for i in range(int(state["n_layers"])):
            p = f"layer.{i}."
            self.layers.append({name: (_pack(state[p + name + ".weight"]), state[p + name + ".bias"])
                                for name in ("qkv", "attention_out", "intermediate", "out")}
                               | {ln: (state[p + ln + ".weight"], state[p + ln + ".bias"]) for ln in ("ln_attention", "ln_out")})

    @classmethod
    def from_model(cls, auto) -> "LeanBert | None":
        """The lean forward of a transformers ``BertModel`` (absolute positions, GELU, eval), or
        None for any other model (MPNet, a decoder, relative positions) or without oneDNN."""
        cfg = getattr(auto, "config", None)
        if (_LINEAR is None or not torch.backends.mkldnn.is_available() or type(auto).__name__ != "BertModel"
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
            return cls(state, cfg.num_attention_heads, cfg.layer_norm_eps)
        except RuntimeError:  # a dtype oneDNN cannot pack here
            return None

    def save(self, path: Path) -> None:
        torch.save({"state": self.state, "heads": self.heads, "eps": self.eps}, str(path))

    @classmethod
    def load(cls, path: Path) -> "LeanBert":
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
        return cls(blob["state"], int(blob["heads"]), float(blob["eps"]))

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings of one text (``ids``: (1, T)); the mask must be all ones (no padding)."""
        if ids.shape[0] != 1 or not bool(mask.all()):
            raise ValueError("the lean forward reads one unpadded text")
        s, T = self.state, ids.shape[1]
        h = F.embedding(ids[0], s["word"]) + s["token_type"]  # as BertEmbeddings: (words + token type) + positions
        h = h + s["position"][:T]
        h = F.layer_norm(h, h.shape[-1:], s["ln_embeddings.weight"], s["ln_embeddings.bias"], self.eps)
        width = h.shape[-1]
        head = width // self.heads
        for layer in self.layers:
            q, k, v = _LINEAR(h, *layer["qkv"], "none", [], "").split(width, dim=1)
            q, k, v = (t.view(1, T, self.heads, head).transpose(1, 2) for t in (q, k, v))
            att = F.scaled_dot_product_attention(q, k, v, scale=head ** -0.5).transpose(1, 2).reshape(T, width)
            h = F.layer_norm(_LINEAR(att, *layer["attention_out"], "none", [], "") + h, (width,), *layer["ln_attention"], self.eps)
            x = F.gelu(_LINEAR(h, *layer["intermediate"], "none", [], ""))
            h = F.layer_norm(_LINEAR(x, *layer["out"], "none", [], "") + h, (width,), *layer["ln_out"], self.eps)
        return h.unsqueeze(0)


def verified(candidate, reference, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """True when ``candidate(ids, mask)`` equals ``reference(ids, mask)`` bit for bit on every input."""
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            return all(torch.equal(candidate(ids, mask), reference(ids, mask)) for ids, mask in inputs)
    except Exception:  # noqa: BLE001 - a forward that fails is not used
        return False
