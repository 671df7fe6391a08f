"""Train a TopK SAE on cached reader activations (plain PyTorch, CPU-friendly, resumable).

Why not sae-lens's ``SAETrainer``? It works offline, but its TopK path decodes densely; on this
2-core CPU the step time is dominated by two (batch x d_in x d_sae) matmuls. Here only the
encoder's forward is dense: the k active latents' pre-activations are recomputed
differentiably by gathering their encoder rows (``F.embedding``), and decoding is an
``embedding_bag`` over the k active decoder rows, so backward costs O(batch·k·d_in) instead of
O(batch·d_sae·d_in). The result is saved in sae-lens's format and loads there unchanged.

Recipe (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): inputs mean-centred and
scaled to mean norm sqrt(d_in); unit-norm decoder rows (renormalised after every step);
encoder initialised as the decoder's transpose; AuxK loss (coefficient 1/32) that asks
latents dead for ``dead_tokens`` tokens to reconstruct the residual error; Adam with warm-up
and a linear decay over the last 20% of steps.

Matryoshka prefixes (Bussmann et al. 2025; HypotheSAEs' option): with ``prefixes`` = (m1, m2, ...),
the loss is the mean FVU of the reconstructions from latents [0, m1), [0, m2), ..., and all of them,
the k active latents chosen once over the whole width. The first latents must then reconstruct
alone, so they learn the broad directions (a topic, a tone) that a flat TopK SAE splits over
narrower latents ("feature absorption").
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from indexer.core.errors import InputError
from indexer.encode.reader import resolve_device
from indexer.encode.sae import fold_normalisation, fraction_of_variance_unexplained, load_sae, save_sae
from indexer.train.activation_cache import iter_shards


@dataclass
class TrainConfig:
    d_sae: int = 16384
    k: int = 32
    lr: float = 4e-4
    batch_tokens: int = 2048
    max_steps: int = 100_000  # the wall-clock budget usually ends training first
    max_minutes: float = 70.0  # the LR schedule is fitted to it
    warmup_steps: int = 100
    aux_coef: float = 1 / 32
    aux_k: int = 64
    aux_rows: int = 512
    dead_tokens: int = 1_000_000
    prefixes: tuple[int, ...] = ()  # Matryoshka prefix widths (each < d_sae, ascending); () = a flat TopK SAE
    checkpoint_every: int = 100
    seed: int = 0
    # Where the SAE trains: "cpu", "cuda" or "auto" (a GPU if torch sees one). Only speed depends
    # on it: a run resumes on another device from the same checkpoint.
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.prefixes = tuple(self.prefixes)  # a list from a saved config
        if list(self.prefixes) != sorted(set(self.prefixes)) or any(not 0 < m < self.d_sae for m in self.prefixes):
            raise InputError(f"prefixes must be ascending widths below d_sae={self.d_sae} (got {list(self.prefixes)})")


class TopKTrainer(torch.nn.Module):
    def __init__(self, d_in: int, cfg: TrainConfig):
        super().__init__()
        g = torch.Generator().manual_seed(cfg.seed)
        dec = torch.randn(cfg.d_sae, d_in, generator=g)
        dec = dec / dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(dec)
        self.W_encT = torch.nn.Parameter(dec.clone())  # (d_sae, d_in): rows gathered per latent
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.cfg = cfg

    def _values(self, xc: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(idx, self.W_encT)  # (B, k, d)
        return torch.relu(torch.einsum("bkd,bd->bk", rows, xc) + self.b_enc[idx])

    def forward(self, x: torch.Tensor, dead: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction loss, batch FVU of the whole SAE, AuxK loss, active latents, their values);
        the loss is the FVU itself unless Matryoshka prefixes average it with theirs."""
        xc = x - self.b_dec
        with torch.no_grad():
            pre = xc @ self.W_encT.T + self.b_enc
            idx = pre.topk(self.cfg.k, dim=-1).indices
        vals = self._values(xc, idx)
        recon = F.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum") + self.b_dec
        var = ((x - x.mean(0)) ** 2).sum()
        mse = ((recon - x) ** 2).sum() / var  # = batch FVU
        recon_loss = mse
        if self.cfg.prefixes:  # Matryoshka: every prefix reconstructs on its own; the mean of their FVUs
            parts = [((F.embedding_bag(idx, self.W_dec, per_sample_weights=vals * (idx < m), mode="sum") + self.b_dec - x) ** 2).sum() / var
                     for m in self.cfg.prefixes]
            recon_loss = (sum(parts) + mse) / (len(parts) + 1)
        aux = torch.zeros((), device=x.device)
        n_dead = int(dead.sum())
        if n_dead and self.cfg.aux_coef > 0:
            r = min(len(x), self.cfg.aux_rows)  # AuxK on a slice of the batch: same signal, 1/4 of the cost
            with torch.no_grad():
                masked = pre[:r].masked_fill(~dead, float("-inf"))
                aux_idx = masked.topk(min(self.cfg.aux_k, n_dead), dim=-1).indices
            aux_vals = self._values(xc[:r], aux_idx)
            err = (x[:r] - recon[:r]).detach()
            err_hat = F.embedding_bag(aux_idx, self.W_dec, per_sample_weights=aux_vals, mode="sum")
            aux = ((err_hat - err) ** 2).sum() / ((err - err.mean(0)) ** 2).sum().clamp_min(1e-8)
        return recon_loss, mse, aux, idx, vals

    @torch.no_grad()
    def renorm_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)


class CachedTokens:
    """The cache's shards read as one (tokens, d_in) array without loading them.

    Concatenating the memory-mapped shards copied the whole cache into memory: 12M tokens of a
    640-wide layer are 15 GB of fp16, most of this machine's 24 GB. A batch gathers its rows from
    the shards instead (the page cache keeps what is hot).
    """

    def __init__(self, shards: list[np.ndarray]):
        self.shards = shards
        self.starts = np.cumsum([0] + [len(s) for s in shards])
        self.shape = (int(self.starts[-1]), int(shards[0].shape[1]))

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order) as one array, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.shape[1]), dtype=self.shards[0].dtype)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        for s in np.unique(which):
            m = which == s
            out[m] = self.shards[s][idx[m] - self.starts[s]]
        return out


def _load_training_tokens(cache_dir: Path) -> CachedTokens:
    shards = list(iter_shards(cache_dir))
    if not shards:
        raise InputError(f"{cache_dir}: no cached activations (run the caching step first)")
    return CachedTokens(shards)


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_start = int(total * 0.8)
    if step >= decay_start:
        return cfg.lr * max(0.0, (total - step) / max(total - decay_start, 1))
    return cfg.lr


def train_sae(cache_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, metadata: dict, log=print) -> dict:
    """Train on cached activations, checkpointing to ``out_dir``; returns the training report."""
    with torch.enable_grad():
        return _train_sae(Path(cache_dir), Path(out_dir), cfg, metadata, log)


def _train_sae(cache_dir: Path, out_dir: Path, cfg: TrainConfig, metadata: dict, log) -> dict:
    cache_dir, out_dir = Path(cache_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _load_training_tokens(cache_dir)
    n, d_in = data.shape
    stats_path = out_dir / "norm_stats.pt"
    if stats_path.exists():
        stats = torch.load(stats_path)
    else:
        sample = torch.from_numpy(data.take(np.random.default_rng(0).choice(n, min(n, 200_000), replace=False)).astype(np.float32))
        mean = sample.mean(0)
        scale = math.sqrt(d_in) / float((sample - mean).norm(dim=1).mean())
        stats = {"mean": mean, "scale": scale}
        torch.save(stats, stats_path)
    device = resolve_device(cfg.device)
    mean, scale = stats["mean"].to(device), float(stats["scale"])
    model = TopKTrainer(d_in, cfg).to(device)
    try:  # fused Adam is ~2x cheaper per step on CPU where available
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    ckpt = out_dir / "checkpoint.pt"
    state = {"step": 0, "tokens": 0, "elapsed": 0.0, "total_steps": cfg.max_steps, "history": []}
    last_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)  # token count at which each latent last fired
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False, map_location=device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        state, last_fired = saved["state"], saved["last_fired"].to(device)
        log(f"resumed at step {state['step']} ({state['tokens']:,} tokens)")
    rng = np.random.default_rng(cfg.seed + state["step"])
    t_start = time.time() - state["elapsed"]
    budget_s = cfg.max_minutes * 60
    try:
        from tqdm import tqdm

        bar = tqdm(total=state["total_steps"], initial=state["step"], desc="train-sae", unit="step", mininterval=5, disable=False)
    except ImportError:  # pragma: no cover
        bar = None
    while state["step"] < state["total_steps"]:
        step = state["step"]
        batch_idx = np.sort(rng.integers(0, n, cfg.batch_tokens))
        x = (torch.from_numpy(data.take(batch_idx).astype(np.float32)).to(device, non_blocking=True) - mean) * scale
        dead = (state["tokens"] - last_fired) > cfg.dead_tokens
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, state["total_steps"], cfg)
        recon_loss, mse, aux, idx, vals = model(x, dead)
        loss = recon_loss + cfg.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.renorm_decoder()
        state["tokens"] += cfg.batch_tokens
        with torch.no_grad():
            last_fired[idx[vals > 0]] = state["tokens"]  # scatter, no sort
        state["step"] += 1
        elapsed = time.time() - t_start
        state["elapsed"] = elapsed
        if state["step"] % 30 == 0 and state["step"] < 0.75 * state["total_steps"]:
            # Fit the run to the wall-clock budget. Re-planned while the LR is still constant,
            # so a machine that gets busier (or quieter) mid-run still ends on time with a full decay.
            window = state.setdefault("_clock", [])
            window.append((state["step"], elapsed))
            s0, e0 = window[max(0, len(window) - 5)]
            per_step = (elapsed - e0) / max(state["step"] - s0, 1) if len(window) > 1 else elapsed / state["step"]
            planned = int(min(cfg.max_steps, state["step"] + max(budget_s - elapsed, 0) / max(per_step, 1e-6)))
            if abs(planned - state["total_steps"]) > 10:
                state["total_steps"] = max(planned, state["step"] + 1)
                if bar is not None:
                    bar.total = state["total_steps"]
                log(f"{per_step:.2f} s/step -> planning {state['total_steps']} steps")
        if state["step"] % 25 == 0:
            state["history"].append({"step": state["step"], "fvu": float(mse.detach()), "aux": float(aux.detach()), "dead": int(dead.sum())})
        if bar is not None:
            bar.update(1)
            if state["step"] % 25 == 0:  # reading a GPU value waits for it: not every step
                bar.set_postfix(fvu=f"{float(mse.detach()):.3f}", dead=int(dead.sum()))
        if state["step"] % cfg.checkpoint_every == 0 or state["step"] == state["total_steps"]:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state, "last_fired": last_fired}, tmp)
            tmp.replace(ckpt)
            log(f"step {state['step']}/{state['total_steps']} fvu {float(mse.detach()):.4f} aux {float(aux.detach()):.3f} dead {int(dead.sum())} ({elapsed/60:.1f} min)")
    if bar is not None:
        bar.close()
    model = model.cpu()
    W_enc, b_enc, W_dec, b_dec = fold_normalisation(
        model.W_encT.detach().T.contiguous(), model.b_enc.detach(), model.W_dec.detach(), model.b_dec.detach(), mean.cpu(), scale
    )
    meta = {**metadata, "training": {**asdict(cfg), "tokens_seen": state["tokens"], "steps": state["step"], "minutes": state["elapsed"] / 60}}
    save_sae(out_dir, W_enc, b_enc, W_dec, b_dec, cfg.k, meta)
    report = evaluate_sae(out_dir, cache_dir)
    report.update({"tokens_seen": state["tokens"], "steps": state["step"], "train_minutes": round(state["elapsed"] / 60, 1),
                   "training_tokens_available": int(n), "d_sae": cfg.d_sae, "k": cfg.k, "history": state["history"]})
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def evaluate_sae(sae_dir: str | Path, cache_dir: str | Path) -> dict:
    """FVU, L0 and dead fraction of the *saved* SAE on held-out activations."""
    sae = load_sae(sae_dir)
    holdout = np.load(Path(cache_dir) / "holdout.npy")
    m = fraction_of_variance_unexplained(sae, holdout)
    fired = m.pop("fired")
    return {
        "heldout_fvu": round(m["fvu"], 4),
        "heldout_l0": round(m["l0"], 2),
        "heldout_tokens": m["tokens"],
        "dead_fraction_heldout": round(float((fired == 0).mean()), 4),
    }
