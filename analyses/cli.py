"""`saedex diff`, `saedex correlations`, `saedex cluster`, and `saedex export` / `import` (Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from analyses.clustering import cluster
from analyses.correlations import correlations
from analyses.diff import diff
from analyses.params import ClusterParams, CorrelationsParams, DiffParams
from analyses.plots import plot_clusters, plot_correlations, plot_diff
from indexer.core.cli import JsonOpt, UrlOpt, console, emit, friendly_errors
from indexer.core.filters import where_dict
from indexer.core.params import cli_command
from indexer.store import Filter, open_store


def _b_slices(values: list[str], cli: dict) -> dict | list[dict]:
    """``--b`` options: one slice (repeat for AND), or with ``--multi`` one slice each."""
    return [where_dict([x]) for x in values] if cli.get("multi") else where_dict(values)


@friendly_errors
@cli_command(DiffParams, fixed={"b": (List[str], _b_slices)})
def diff_cmd(
    params: DiffParams,
    index: str = typer.Option(..., "--index"),
    multi: bool = typer.Option(False, "--multi", help="Treat each --b as its own slice: A vs the max of the others."),
    llm: Optional[str] = typer.Option(None, "--llm"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save a bar chart PNG."),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """How does slice A differ from slice B? Latents by document-frequency difference, BH-adjusted."""
    with open_store(index, qdrant_url) as store:
        res = diff(store, index, params, llm_model=llm)
    if plot:
        plot_diff(res, plot, Filter(params.a).describe(" & "), " | ".join(Filter(x).describe(" & ") for x in params.b_slices()))

    def render(r):
        t = Table(title=f"diff: A ({r['n_a']} docs) vs B ({r['n_b']} docs); {r['significant']} of {r['tested_latents']} latents significant (BH q<0.05)")
        for c in ("latent", "label", "freq A", "freq B", "diff", "p_adj", "example"):
            t.add_column(c, overflow="fold")
        for x in r["latents"]:
            t.add_row(str(x["latent"]), escape(_with_quality(x["label"], x.get("quality"))), f"{x['freq_a']:.3f}", f"{x['freq_b']:.3f}", f"{x['diff']:+.3f}",
                      f"{x['p_adj']:.2g}", escape(x["examples"][0]) if x["examples"] else "")
        console.print(t)
        for h in r.get("hypotheses", {}).get("hypotheses", []):
            console.print(f"- {escape(h['hypothesis'])}: verified {h['verified_freq_a']:.0%} vs {h['verified_freq_b']:.0%}")

    emit(res, as_json, render)


@friendly_errors
@cli_command(CorrelationsParams)
def correlations_cmd(
    params: CorrelationsParams,
    index: str = typer.Option(..., "--index"),
    plot: Optional[Path] = typer.Option(None, "--plot"),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Latent pairs that co-occur (NPMI) although their labels are unrelated."""
    with open_store(index, qdrant_url) as store:
        res = correlations(store, index, params)
    if plot:
        plot_correlations(res, plot)

    def render(r):
        low_q = f", {r['dropped_low_quality']} with a label below --min-quality" if r.get("dropped_low_quality") else ""
        t = Table(title=f"correlations over {r['documents']} docs (dropped: {r['dropped_same_span']} pairs peaking on the same tokens, "
                        f"{r['dropped_similar_labels']} with similar labels{low_q})")
        for c in ("a", "label a", "b", "label b", "npmi", "count", "label sim", "example"):
            t.add_column(c, overflow="fold")
        for p in r["pairs"]:
            t.add_row(str(p["a"]), escape(_with_quality(p["label_a"], p.get("quality_a"))), str(p["b"]),
                      escape(_with_quality(p["label_b"], p.get("quality_b"))), f"{p['npmi']:.3f}", str(p["count"]),
                      f"{p['label_sim']:.2f}", escape(p["examples"][0]) if p["examples"] else "")
        console.print(t)

    emit(res, as_json, render)


@friendly_errors
@cli_command(ClusterParams)
def cluster_cmd(
    params: ClusterParams,
    index: str = typer.Option(..., "--index"),
    plot: Optional[Path] = typer.Option(None, "--plot"),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Cluster documents: spectral on the Jaccard similarity of their latents, or with --axis by
    their positions on the axis's values (a taxonomy group such as topic or tone, or poles 'A vs B',
    refined by a linear model over all latents fitted on the documents leaning most to each pole)."""
    with open_store(index, qdrant_url) as store:
        res = cluster(store, index, params, with_coords=plot is not None)
    coords, pred = res.pop("_coords", None), res.pop("_pred", None)
    if plot and coords is not None:
        plot_clusters(res, coords, pred, plot)

    def render(r):
        if r.get("axis_resolved"):
            ax = r["axis_resolved"]
            console.print(f"axis {escape(ax['text'])!r}: {escape(ax['source'])} ({len(ax['values'])} values)", highlight=False)
            if ax.get("pole_model"):
                pm = ax["pole_model"]
                console.print(f"pole model fitted on the {pm['seed_documents']} documents leaning most to either pole; it leans on:",
                              highlight=False)
                for value, lats in pm["latents"].items():
                    console.print(f"  {escape(value)}: " + ", ".join(escape(_with_quality(l["label"], l.get("quality"))) for l in lats[:5]),
                                  highlight=False)
        for c in r["clusters"]:
            on_axis = ", ".join(escape(v["value"]) for v in c.get("axis_values", []))
            console.print(f"[bold]cluster {c['id']}[/bold] ({c['size']} docs)" + (f" [{on_axis}]" if on_axis else "") + ": "
                          + ", ".join(escape(_with_quality(l["label"], l.get("quality"))) for l in c["latents"][:5]), highlight=False)
        if r["scores"]:
            console.print(f"scores vs {params.label_field}: {r['scores']}")

    emit(res, as_json, render)


def _with_quality(label: str, quality: float | None) -> str:
    """``label (q 0.87)``: how far the name can be trusted, beside the name."""
    return label if quality is None else f"{label} (q {quality:.2f})"


# The commands this layer adds to `saedex` (composed in server/cli.py), in the order `--help` lists them.
COMMANDS = {
    "diff": diff_cmd,
    "correlations": correlations_cmd,
    "cluster": cluster_cmd,
}
