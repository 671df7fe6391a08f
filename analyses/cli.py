"""`saedex diff`, `saedex correlations`, `saedex cluster`, and `saedex export` / `import` (Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from indexer.cli_common import JsonOpt, UrlOpt, console, emit, friendly_errors


def register(app: typer.Typer) -> None:
    app.command("diff")(diff_cmd)
    app.command("correlations")(correlations_cmd)
    app.command("cluster")(cluster_cmd)
    app.command("export")(export_cmd)
    app.command("import")(import_cmd)


def _store(index: str, qdrant_url: str | None):
    from indexer.store import open_store

    return open_store(index, qdrant_url)


def _where(items: list[str] | None):
    from search.filters import parse_where

    return parse_where(items)


@friendly_errors
def diff_cmd(
    index: str = typer.Option(..., "--index"),
    a: List[str] = typer.Option(..., "--a", help="Filter for slice A (key=value; repeat for AND)."),
    b: List[str] = typer.Option(..., "--b", help="Filter for slice B; give several --b dataset=X with --multi for one-vs-max."),
    multi: bool = typer.Option(False, "--multi", help="Treat each --b as its own slice: A vs the max of the others."),
    top: int = typer.Option(20, "--top"),
    threshold: float = typer.Option(0.0, "--threshold", help="A document has a latent when its max activation exceeds this."),
    floor: float = typer.Option(0.5, "--floor", help="Count a latent in a document only where it fires at >= this x its typical strength (the SAE's median pooled activation; 0 = any non-zero)."),
    min_coverage: float = typer.Option(0.005, "--min-coverage"),
    max_coverage: float = typer.Option(0.95, "--max-coverage"),
    hypotheses: int = typer.Option(0, "--hypotheses", help="LLM merges top latents into N verified hypotheses."),
    llm: Optional[str] = typer.Option(None, "--llm"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save a bar chart PNG."),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """How does slice A differ from slice B? Latents by document-frequency difference, BH-adjusted."""
    from analyses.diff import diff

    fa = _where(a)
    fb = [_where([x]) for x in b] if multi else _where(b)
    store = _store(index, qdrant_url)
    try:
        res = diff(store, index, fa, fb, top=top, threshold=threshold, min_coverage=min_coverage,
                   max_coverage=max_coverage, hypotheses=hypotheses, llm_model=llm, floor=floor)
    finally:
        store.close()
    if plot:
        from analyses.plots import plot_diff

        plot_diff(res, plot, " & ".join(a), " | ".join(b))

    def render(r):
        t = Table(title=f"diff: A ({r['n_a']} docs) vs B ({r['n_b']} docs); {r['significant']} of {r['tested_latents']} latents significant (BH q<0.05)")
        for c in ("latent", "label", "freq A", "freq B", "diff", "p_adj", "example"):
            t.add_column(c, overflow="fold")
        for x in r["latents"]:
            t.add_row(str(x["latent"]), escape(x["label"]), f"{x['freq_a']:.3f}", f"{x['freq_b']:.3f}", f"{x['diff']:+.3f}",
                      f"{x['p_adj']:.2g}", escape(x["examples"][0]) if x["examples"] else "")
        console.print(t)
        for h in r.get("hypotheses", {}).get("hypotheses", []):
            console.print(f"- {escape(h['hypothesis'])}: verified {h['verified_freq_a']:.0%} vs {h['verified_freq_b']:.0%}")

    emit(res, as_json, render)


@friendly_errors
def correlations_cmd(
    index: str = typer.Option(..., "--index"),
    where: Optional[List[str]] = typer.Option(None, "--where"),
    min_npmi: float = typer.Option(0.3, "--min-npmi"),
    max_label_sim: float = typer.Option(0.2, "--max-label-sim"),
    min_support: int = typer.Option(5, "--min-support"),
    max_freq: float = typer.Option(0.5, "--max-freq", help="Skip latents present in more than this fraction of documents."),
    per_doc: int = typer.Option(512, "--per-doc", help="Keep each document's N most salient latents (0 = all; cost grows with N^2)."),
    max_docs: int = typer.Option(4000, "--max-docs", help="Sample this many documents from larger slices (seeded); 0 = exact, every document."),
    floor: float = typer.Option(0.5, "--floor", help="Count a latent in a document only where it fires at >= this x its typical strength (the SAE's median pooled activation; 0 = any non-zero)."),
    top: int = typer.Option(20, "--top"),
    plot: Optional[Path] = typer.Option(None, "--plot"),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Latent pairs that co-occur (NPMI) although their labels are unrelated."""
    from analyses.correlations import correlations

    store = _store(index, qdrant_url)
    try:
        res = correlations(store, index, _where(where), min_npmi=min_npmi, max_label_sim=max_label_sim,
                           min_support=min_support, top=top, max_freq=max_freq, per_doc=per_doc, floor=floor, max_docs=max_docs)
    finally:
        store.close()
    if plot:
        from analyses.plots import plot_correlations

        plot_correlations(res, plot)

    def render(r):
        t = Table(title=f"correlations over {r['documents']} docs (dropped: {r['dropped_same_span']} pairs peaking on the same tokens, {r['dropped_similar_labels']} with similar labels)")
        for c in ("a", "label a", "b", "label b", "npmi", "count", "label sim", "example"):
            t.add_column(c, overflow="fold")
        for p in r["pairs"]:
            t.add_row(str(p["a"]), escape(p["label_a"]), str(p["b"]), escape(p["label_b"]), f"{p['npmi']:.3f}", str(p["count"]),
                      f"{p['label_sim']:.2f}", escape(p["examples"][0]) if p["examples"] else "")
        console.print(t)

    emit(res, as_json, render)


@friendly_errors
def cluster_cmd(
    index: str = typer.Option(..., "--index"),
    where: Optional[List[str]] = typer.Option(None, "--where"),
    k: int = typer.Option(5, "--k"),
    axis: Optional[str] = typer.Option(None, "--axis", help="Cluster along this axis: 'news topic', 'tone', 'A vs B'."),
    method: str = typer.Option("sae", "--method", help="sae | dense"),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="Score clusters against this payload field."),
    plot: Optional[Path] = typer.Option(None, "--plot"),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Cluster documents: spectral on the Jaccard similarity of their latents, or with --axis by
    their positions on the axis's values (a taxonomy group such as topic or tone, or poles 'A vs B')."""
    from analyses.clustering import cluster

    store = _store(index, qdrant_url)
    try:
        res = cluster(store, index, _where(where), k=k, axis=axis, method=method, label_field=label_field, with_coords=plot is not None)
    finally:
        store.close()
    coords, pred = res.pop("_coords", None), res.pop("_pred", None)
    if plot and coords is not None:
        from analyses.plots import plot_clusters

        plot_clusters(res, coords, pred, plot)

    def render(r):
        if r.get("axis_resolved"):
            ax = r["axis_resolved"]
            console.print(f"axis {escape(ax['text'])!r}: {escape(ax['source'])} ({len(ax['values'])} values)", highlight=False)
        for c in r["clusters"]:
            on_axis = ", ".join(escape(v["value"]) for v in c.get("axis_values", []))
            console.print(f"[bold]cluster {c['id']}[/bold] ({c['size']} docs)" + (f" [{on_axis}]" if on_axis else "") + ": "
                          + ", ".join(escape(l["label"]) for l in c["latents"][:5]), highlight=False)
        if r["scores"]:
            console.print(f"scores vs {label_field}: {r['scores']}")

    emit(res, as_json, render)


@friendly_errors
def export_cmd(
    index: str = typer.Option(..., "--index"),
    parquet: Path = typer.Option(..., "--parquet", help="Output file: one row per document (id, dataset, text, latents, values, payload fields)."),
    where: Optional[List[str]] = typer.Option(None, "--where", help="FIELD=VALUE; repeat to AND."),
    dense: bool = typer.Option(False, "--dense", help="Also write the dense baseline vectors."),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Export an index's pooled vectors to Parquet (the recipe rides in the file's metadata)."""
    from indexer.catalog import require_index
    from indexer.interchange import export_parquet
    from indexer.store import open_store
    flt = _where(where)
    store = open_store(index, qdrant_url)
    try:
        out = export_parquet(store, require_index(store, index), parquet, flt, dense, progress=not as_json)
    finally:
        store.close()
    emit(out, as_json, lambda o: console.print(f"exported {o['documents']:,} documents to {o['path']}"))


@friendly_errors
def import_cmd(
    path: Path = typer.Argument(..., help="A Parquet file written by `saedex export` (or of that shape)."),
    index: str = typer.Option(..., "--index"),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Load pooled vectors from Parquet into an index (created from the file's recipe if new)."""
    from indexer.interchange import import_parquet

    rep = import_parquet(path, index, qdrant_url, progress=not as_json)
    emit(rep.as_dict(), as_json, lambda o: console.print(
        f"imported {o['indexed']:,} of {o['read']:,} documents into {index} ({o['already_indexed']:,} already there, "
        f"{o['dense_computed']:,} dense vectors computed)"))
