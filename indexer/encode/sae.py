"""The SAE used at index time: load/save in the sae-lens on-disk format, encode hidden states.

On disk an SAE is a folder with ``cfg.json`` + ``sae_weights.safetensors`` exactly as sae-lens
writes it (``W_enc`` (d_in, d_sae), ``b_enc``, ``W_dec`` (d_sae, d_in), ``b_dec``), so sae-lens can
load ours and we can load any TopK / ReLU / JumpReLU SAE it publishes. Input normalisation used in
training is *folded into the weights* before saving, so the saved SAE reads raw residuals and
needs no extra state (see ``fold_normalisation``).

Encoding is done in float32 with a dense matmul followed by the architecture's sparsifier; for
TopK only the k largest pre-activations survive, which is also what makes max-pooling cheap.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from indexer.core.errors import InputError, UnavailableError

SAE_LENS_FORMAT_VERSION = "6.54.12"  # written into metadata so sae-lens >= 6 loads our SAEs
DEFAULT_SAE_DIR = Path(__file__).parent / "default_sae"
# The concept family's SAE (over sentence embeddings of a document's units), shipped when trained.
DEFAULT_CONCEPT_SAE_DIR = Path(__file__).parent / "concept_sae"
# Concept SAEs shipped with saedex, by the name ``saedex index --concept NAME`` takes: "mpnet" is
# trained on all-mpnet-base-v2 embeddings of the same units (opt-in: its model is a 438 MB
# download, ``make mpnet``, and it costs more to index; README "The opt-in mpnet concept family").
# The default is a Matryoshka SAE (prefixes 128/512; "matryoshka" names it too); "flat" is the
# earlier default, the same recipe without prefixes (README "Matryoshka prefixes": the default
# gained property search on queries no setting was tuned on).
SHIPPED_CONCEPT_SAES = {"default": DEFAULT_CONCEPT_SAE_DIR, "matryoshka": DEFAULT_CONCEPT_SAE_DIR,
                        "flat": Path(__file__).parent / "concept_sae_flat", "mpnet": Path(__file__).parent / "concept_sae_mpnet"}


# ----------------------------------------------------------------------------- typed configs
@dataclass
class SAEConfig:
    """The sae-lens ``cfg.json`` of one SAE, typed. Keys this saedex does not know (a newer
    sae-lens, another trainer) are kept in ``extra`` and written back, so load -> save round-trips."""

    d_in: int
    d_sae: int
    dtype: str = "float32"
    device: str = "cpu"
    apply_b_dec_to_input: bool = True
    normalize_activations: str | None = "none"
    reshape_activations: str = "none"
    metadata: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def architecture(cls) -> str:
        return "standard"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**d, **self.extra, "architecture": self.architecture()}

    @classmethod
    def from_dict(cls, d: dict) -> "SAEConfig":
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known and k != "architecture"})


@dataclass
class TopKSAEConfig(SAEConfig):
    k: int = 32
    rescale_acts_by_decoder_norm: bool = False

    @classmethod
    def architecture(cls) -> str:
        return "topk"


@dataclass
class JumpReLUSAEConfig(SAEConfig):
    @classmethod
    def architecture(cls) -> str:
        return "jumprelu"


# ----------------------------------------------------------------------------- SAE classes
@dataclass
class SparseAutoencoder:
    """A ReLU ("standard") SAE; subclasses change only the sparsifier (sae-lens's class per architecture)."""

    W_enc: torch.Tensor  # (d_in, d_sae)
    b_enc: torch.Tensor  # (d_sae,)
    W_dec: torch.Tensor  # (d_sae, d_in)
    b_dec: torch.Tensor  # (d_in,)
    cfg: SAEConfig
    # (W_enc, b_enc) in the encoding dtype/device; None: fp32 on CPU (see set_precision)
    _fast: tuple | None = field(default=None, init=False, repr=False)

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def architecture(self) -> str:
        return self.cfg.architecture()

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Dense activations from pre-activations: the architecture's sparsifier."""
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense (n, d_sae) latent activations of raw hidden states ``x`` (n, d_in)."""
        return self.activate(self._centred(x.to(self.W_enc.dtype)) @ self.W_enc + self.b_enc)

    def encode_topk_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices) of the active latents per token (padded to the most active token's count).

        The pre-activation matmul (d_in x d_sae per token) runs in the precision chosen by
        :meth:`set_precision` (bf16 is ~1.9x faster than fp32 on 2 CPU cores with native bf16).
        """
        dense = self.activate(self._pre_activations(self._centred(x.to(torch.float32))).float())
        k = int((dense > 0).sum(-1).max().item()) or 1
        return dense.topk(k, dim=-1)

    def set_precision(self, precision: str, device: torch.device | str = "cpu") -> "SparseAutoencoder":
        """Encode with ``fp32`` or ``bf16`` weights on ``device`` (the reader's choice, see reader.resolve_precision)."""
        device = torch.device(device)
        if precision == "bf16":
            self._fast = (self.W_enc.to(device=device, dtype=torch.bfloat16), self.b_enc.to(device=device, dtype=torch.bfloat16))
        elif device.type != "cpu":
            self._fast = (self.W_enc.to(device), self.b_enc.to(device))
        else:
            self._fast = None
        return self

    def _pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast is None:
            return x @ self.W_enc + self.b_enc
        w, b = self._fast
        return torch.addmm(b, x.to(device=w.device, dtype=w.dtype), w)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights as saved (sae-lens names)."""
        return {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}

    def content_hash(self) -> str:
        """Identifies the SAE in index manifests: indexes built with other weights are refused."""
        h = hashlib.sha256()
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            h.update(getattr(self, name).detach().to(torch.float16).numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write the folder sae-lens reads: ``cfg.json`` (``cfg.to_dict()``, any architecture) and the weights."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().to(dtype).contiguous() for k, v in self.tensors().items()}, str(p / "sae_weights.safetensors"))
        (p / "cfg.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        return p

    @classmethod
    def from_tensors(cls, w: dict[str, torch.Tensor], cfg: SAEConfig) -> "SparseAutoencoder":
        return cls(W_enc=w["W_enc"].float(), b_enc=w["b_enc"].float(), W_dec=w["W_dec"].float(), b_dec=w["b_dec"].float(), cfg=cfg)


@dataclass
class TopKSAE(SparseAutoencoder):
    """Only the k largest pre-activations survive: what makes max-pooling cheap."""

    cfg: TopKSAEConfig

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        vals, idx = pre.topk(min(self.cfg.k, pre.shape[-1]), dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))

    def encode_topk_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices) of the k largest per token, without a dense scatter."""
        pre = self._pre_activations(self._centred(x.to(torch.float32)))
        vals, idx = pre.topk(min(self.cfg.k, pre.shape[-1]), dim=-1)
        return torch.relu(vals).float(), idx


@dataclass
class JumpReLUSAE(SparseAutoencoder):
    """A pre-activation survives above its latent's learned threshold."""

    cfg: JumpReLUSAEConfig
    threshold: torch.Tensor | None = None  # (d_sae,)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre * (pre > self.threshold.to(pre.dtype))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**super().tensors(), "threshold": self.threshold}

    @classmethod
    def from_tensors(cls, w: dict[str, torch.Tensor], cfg: SAEConfig) -> "JumpReLUSAE":
        sae = super().from_tensors(w, cfg)
        sae.threshold = w["threshold"].float()
        return sae


# ----------------------------------------------------------------------------- registry
SAE_CLASS_REGISTRY: dict[str, tuple[type[SparseAutoencoder], type[SAEConfig]]] = {}


def register_sae_class(architecture: str, sae_class: type[SparseAutoencoder], cfg_class: type[SAEConfig]) -> None:
    """Make an architecture loadable by name (``cfg.json``'s ``architecture``), as sae-lens's registry does."""
    SAE_CLASS_REGISTRY[architecture] = (sae_class, cfg_class)


register_sae_class("standard", SparseAutoencoder, SAEConfig)
register_sae_class("topk", TopKSAE, TopKSAEConfig)
register_sae_class("jumprelu", JumpReLUSAE, JumpReLUSAEConfig)


def sae_classes(architecture: str) -> tuple[type[SparseAutoencoder], type[SAEConfig]]:
    try:
        return SAE_CLASS_REGISTRY[architecture]
    except KeyError:
        raise InputError(f"SAE architecture {architecture!r} is not supported "
                         f"(known: {', '.join(sorted(SAE_CLASS_REGISTRY))})") from None


def sae_from(cfg_dict: dict, tensors: dict[str, torch.Tensor]) -> SparseAutoencoder:
    """An SAE of the architecture ``cfg_dict`` names."""
    sae_cls, cfg_cls = sae_classes(str(cfg_dict.get("architecture", "standard")))
    return sae_cls.from_tensors(tensors, cfg_cls.from_dict(cfg_dict))


def sae_dir(path: str | Path | None, family: str = "token") -> Path:
    """The folder an SAE path names: ``None`` or ``"default"`` (as manifests record it) is the
    SAE of that family shipped with saedex, as is a shipped concept SAE's name (``"mpnet"``)."""
    if path in (None, "", "default"):
        return DEFAULT_SAE_DIR if family == "token" else DEFAULT_CONCEPT_SAE_DIR
    if family == "concept" and path in SHIPPED_CONCEPT_SAES:
        return SHIPPED_CONCEPT_SAES[str(path)]
    return Path(path)


def shipped_concept_sae() -> SparseAutoencoder | None:
    """The concept family's shipped SAE, or None where this saedex ships none."""
    d = DEFAULT_CONCEPT_SAE_DIR
    return load_sae(d) if (d / "cfg.json").exists() else None


def load_sae(path: str | Path | None = None) -> SparseAutoencoder:
    """Load an SAE folder in sae-lens format (default: the SAE shipped with saedex).

    ``path`` may also be ``release:sae_id`` for a sae-lens pretrained release, which needs a hub.
    """
    path = sae_dir(None if path is None else str(path))
    spath = str(path)
    if ":" in spath and not Path(spath).exists():
        return _load_pretrained_release(spath)
    p = Path(path)
    if not (p / "cfg.json").exists() or not (p / "sae_weights.safetensors").exists():
        raise InputError(f"{p}: not an SAE folder (needs cfg.json and sae_weights.safetensors)")
    cfg = json.loads((p / "cfg.json").read_text())
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise InputError(f"{p}: normalize_activations={cfg['normalize_activations']!r} is not supported; fold it into the weights")
    return sae_from(cfg, load_file(str(p / "sae_weights.safetensors")))


def _load_pretrained_release(spec: str) -> SparseAutoencoder:
    """``release:sae_id`` via sae-lens (needs network access to the hub)."""
    from sae_lens import SAE

    release, sae_id = spec.split(":", 1)
    try:
        loaded = SAE.from_pretrained(release=release, sae_id=sae_id, device="cpu")
    except Exception as e:  # noqa: BLE001 - sae-lens raises many kinds when offline
        raise UnavailableError(f"cannot load pretrained SAE {spec!r} (is the model hub reachable?): {e}") from None
    sae_obj = loaded[0] if isinstance(loaded, tuple) else loaded
    cfg = sae_obj.cfg.to_dict() if hasattr(sae_obj.cfg, "to_dict") else dict(vars(sae_obj.cfg))
    tensors = {n: getattr(sae_obj, n).detach() for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold") if hasattr(sae_obj, n)}
    return sae_from(cfg, tensors)


def fold_normalisation(
    W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor, mean: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn an SAE trained on x' = (x - mean) * scale into one that reads raw x.

    encode: (x' - b) W = (x - (mean + b/scale)) (scale W)   decode: (z W_dec + b)/scale + mean
    so W_enc' = scale W_enc, W_dec' = W_dec / scale, b_dec' = mean + b_dec / scale; latent
    activations are unchanged, which keeps the SAE a plain sae-lens SAE.
    """
    return W_enc * scale, b_enc.clone(), W_dec / scale, mean + b_dec / scale


def save_sae(
    path: str | Path,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    metadata: dict,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a TopK SAE (what ``saedex train-sae`` makes) in sae-lens's on-disk format."""
    cfg = TopKSAEConfig(d_in=int(W_enc.shape[0]), d_sae=int(W_enc.shape[1]), k=int(k), metadata={
        "sae_lens_version": SAE_LENS_FORMAT_VERSION, "sae_lens_training_version": SAE_LENS_FORMAT_VERSION, **metadata})
    return TopKSAE(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, cfg=cfg).save(path, dtype)


def fraction_of_variance_unexplained(sae: SparseAutoencoder, x: np.ndarray, batch: int = 4096) -> dict:
    """FVU, L0 and per-latent firing counts of ``sae`` on raw activations ``x``."""
    err = 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.long)
    l0 = 0.0
    xs = torch.from_numpy(np.asarray(x, dtype=np.float32))
    mean = xs.mean(0)
    total = float(((xs - mean) ** 2).sum())
    with torch.inference_mode():
        for s in range(0, len(xs), batch):
            xb = xs[s : s + batch]
            z = sae.encode(xb)
            err += float(((sae.decode(z) - xb) ** 2).sum())
            active = z > 0
            l0 += float(active.sum())
            fired += active.sum(0)
    return {"fvu": err / total, "l0": l0 / len(xs), "fired": fired.numpy(), "tokens": len(xs)}
