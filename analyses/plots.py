"""PNG plots for the analyses (``--plot FILE``): people would rather look than read."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(s: str, n: int = 45) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def plot_diff(result: dict, path: str | Path, name_a: str = "A", name_b: str = "B") -> None:
    plt = _plt()
    groups = result.get("groups")
    if groups:  # grouped rows, the ten strongest of each side
        rows = (groups["a"][:10] + groups["b"][:10])[::-1]
        names = [f"{'A' if r['more_in'] == 'a' else 'B'}: {_short(r['label'])}" + (f" ×{r['count']}" if r["count"] > 1 else "")
                 for r in rows]
    else:
        rows = result["latents"][:20][::-1]
        names = [f"{r['latent']}: {_short(r['label'])}" for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(rows) + 1.5))
    ax.barh(y - 0.2, [r["freq_a"] for r in rows], 0.4, label=name_a, color="#3b7dd8")
    ax.barh(y + 0.2, [r["freq_b"] for r in rows], 0.4, label=name_b, color="#e07b39")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("document frequency")
    corrected = result.get("length", {}).get("correction") == "stratified"
    ax.set_title("latents that differ most" + (" at equal document lengths" if corrected else " (|freq A - freq B|)"))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_correlations(result: dict, path: str | Path) -> None:
    plt = _plt()
    pairs = result["pairs"][:20][::-1]
    y = np.arange(len(pairs))
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(pairs) + 1.5))
    ax.barh(y, [p["npmi"] for p in pairs], color="#6a4fb3")
    ax.set_yticks(y, [f"{_short(p['label_a'], 28)} × {_short(p['label_b'], 28)}" for p in pairs], fontsize=8)
    ax.set_xlabel("NPMI")
    ax.set_xlim(0, 1)
    ax.set_title("co-occurring latents with unrelated labels")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_clusters(result: dict, coords: np.ndarray, pred: np.ndarray, path: str | Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 6))
    for c in sorted(set(pred.tolist())):
        sel = pred == c
        lab = next((cl for cl in result["clusters"] if cl["id"] == c), None)
        name = f"{c}: " + (_short(lab["latents"][0]["label"], 30) if lab and lab["latents"] else "")
        ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.6, label=name)
    ax.legend(fontsize=7, markerscale=3)
    ax.set_title(f"clusters ({result['method']}{', axis: ' + result['axis'] if result.get('axis') else ''})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lengths(lengths_a: np.ndarray, lengths_b: np.ndarray, path, name_a: str = "A", name_b: str = "B") -> None:
    """Document lengths of the two slices (tokens read): the confound a diff corrects for."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    both = np.concatenate([lengths_a, lengths_b]) if len(lengths_a) + len(lengths_b) else np.ones(1)
    bins = np.geomspace(max(1.0, float(both.min())), max(2.0, float(both.max())), 30)
    ax.hist(lengths_a, bins=bins, alpha=0.6, label=f"{name_a} (median {np.median(lengths_a):.0f})", color="#3b7dd8")
    ax.hist(lengths_b, bins=bins, alpha=0.6, label=f"{name_b} (median {np.median(lengths_b):.0f})", color="#e07b39")
    ax.set_xscale("log")
    ax.set_xlabel("tokens read per document")
    ax.set_ylabel("documents")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
