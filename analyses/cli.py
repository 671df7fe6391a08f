"""`saedex diff`, `saedex correlations`, `saedex cluster`, and `saedex export` / `import` (Parquet)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from analyses.clustering import cluster
from analyses.correlations import correlations
from analyses.diff import diff
from analyses.formats import FORMATS
from analyses.formats import render as render_as
from analyses.params import ClusterParams, CorrelationsParams, DiffParams
from analyses.plots import plot_clusters, plot_correlations, plot_diff
from analyses.readable import snippet
from analyses.report import write_report
from indexer.core.cli import JsonOpt, UrlOpt, console, emit, friendly_errors
from indexer.core.errors import InputError
from indexer.core.filters import where_dict
from indexer.core.params import cli_command
from indexer.store import Filter, open_store


def _b_slices(values: list[str], cli: dict) -> dict | list[dict]:
    """``--b`` options: one slice (different keys AND, the same key any of), or with ``--multi`` one slice each."""
    return [where_dict([x]) for x in values] if cli.get("multi") else where_dict(values)


FormatOpt = typer.Option("table", "--format", help="table | json | csv | md | html (on stdout; --json is json).")


def _emit(kind: str, res: dict, as_json: bool, fmt: str, render) -> None:
    """``--json`` / ``--format``: one way every analysis command writes its result."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if fmt in ("csv", "md", "html"):
        sys.stdout.write(render_as(kind, res, fmt))
        return
    emit(res, as_json or fmt == "json", render)


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
    fmt: str = FormatOpt,
):
    """How does slice A differ from slice B? Latents by document frequency at equal document lengths
    (--length none: raw), BH-adjusted; grouped, in two lists, each with an example."""
    with open_store(index, qdrant_url) as store:
        res = diff(store, index, params, llm_model=llm)
    if plot:
        plot_diff(res, plot, Filter(params.a).describe(" & "), " | ".join(Filter(x).describe(" & ") for x in params.b_slices()))

    def render(r):
        console.print(escape(r["summary"]), highlight=False)
        for side in ("a", "b"):
            name = "A" if side == "a" else "B"
            if not r["groups"][side]:
                console.print(f"\nmore in {name}: none among the top {len(r['latents'])} latents")
                continue
            # one block per group (reads at any terminal width): the numbers, then the example
            console.print(f"\n[bold]more in {name}[/bold]  (freq A vs freq B, difference at equal length, BH p)")
            for g in r["groups"][side]:
                ex = g.get("example") or {}
                d = g["diff_length_matched"] if g.get("diff_length_matched") is not None else g["diff"]
                count = f" ×{g['count']}" if g["count"] > 1 else ""
                flag = " [yellow](length-driven)[/yellow]" if g.get("length_driven") else ""
                console.print(f"  [bold]{escape(_with_quality(g['label'], g.get('quality')))}[/bold]{count}  "
                              f"{g['freq_a']:.1%} vs {g['freq_b']:.1%}  {d:+.3f}  p={g['p_adj']:.2g}{flag}  "
                              f"[dim]latent {' '.join(str(x) for x in g['latents'][:4])}{' …' if g['count'] > 4 else ''}[/dim]",
                              highlight=False)
                if ex:
                    fields = " ".join(f"{k}={v}" for k, v in list((ex.get("fields") or {}).items())[:3])
                    console.print(f"    [dim]{escape(ex.get('doc_id', ''))}{_slice_note(g)} {escape(fields)}[/dim]  "
                                  + _rich_marked(ex, 60), highlight=False)
        for h in r.get("hypotheses", {}).get("hypotheses", []):
            console.print(f"- {escape(h['hypothesis'])}: verified {h['verified_freq_a']:.0%} vs {h['verified_freq_b']:.0%}")

    _emit("diff", res, as_json, fmt, render)


@friendly_errors
@cli_command(DiffParams, fixed={"b": (List[str], _b_slices)})
def report_cmd(
    params: DiffParams,
    index: str = typer.Option(..., "--index"),
    out: Path = typer.Option(Path("saedex-report.html"), "--out", help="The HTML file to write."),
    multi: bool = typer.Option(False, "--multi", help="Treat each --b as its own slice: A vs the max of the others."),
    llm: Optional[str] = typer.Option(None, "--llm"),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Write one self-contained HTML report of a diff: summary, lengths, charts, tables, examples."""
    with open_store(index, qdrant_url) as store:
        res = write_report(store, index, params, out, llm_model=llm)
    emit(res, as_json, lambda r: console.print(f"wrote {escape(r['path'])} ({r['bytes'] / 1024:.0f} KB): {escape(r['summary'])}",
                                               highlight=False))


def _slice_note(g: dict) -> str:
    return f" (B slice {g['b_slice'] + 1})" if "b_slice" in g and g.get("more_in") == "b" else ""


def _rich_marked(example: dict, width: int = 40) -> str:
    """The example's snippet cut again to ``width`` characters either side of its span
    (:func:`analyses.readable.snippet`), the span reversed on a terminal, bracketed in a pipe or a
    file (where styles are dropped) as in CSV."""
    if not example:
        return ""
    cut = snippet(example.get("text", ""), example.get("mark"), width)
    text, mark = cut["text"], cut["mark"]
    if not mark:
        return escape(text)
    span = escape(text[mark[0] : mark[1]])
    span = f"[reverse]{span}[/reverse]" if console.is_terminal else escape("[[") + span + escape("]]")
    return escape(text[: mark[0]]) + span + escape(text[mark[1] :])


@friendly_errors
@cli_command(CorrelationsParams)
def correlations_cmd(
    params: CorrelationsParams,
    index: str = typer.Option(..., "--index"),
    plot: Optional[Path] = typer.Option(None, "--plot"),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
    fmt: str = FormatOpt,
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
        for c in ("a", "label a", "b", "label b", "npmi", "at equal length", "count", "label sim", "example"):
            t.add_column(c, overflow="fold")
        for p in r["pairs"]:
            lm = p.get("npmi_length_matched")
            t.add_row(str(p["a"]), escape(_with_quality(p["label_a"], p.get("quality_a"))), str(p["b"]),
                      escape(_with_quality(p["label_b"], p.get("quality_b"))), f"{p['npmi']:.3f}",
                      "" if lm is None else f"{lm:.3f}" + (" [yellow](length)[/yellow]" if p.get("length_driven") else ""),
                      str(p["count"]), f"{p['label_sim']:.2f}", escape(p["examples"][0]) if p["examples"] else "")
        console.print(t)
        if r.get("length_driven_pairs"):
            console.print(f"{r['length_driven_pairs']} of these pairs co-occur less than --min-npmi once documents of "
                          "similar length are compared: length, not content, ties them", highlight=False)

    _emit("correlations", res, as_json, fmt, render)


@friendly_errors
@cli_command(ClusterParams)
def cluster_cmd(
    params: ClusterParams,
    index: str = typer.Option(..., "--index"),
    plot: Optional[Path] = typer.Option(None, "--plot"),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
    fmt: str = FormatOpt,
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
            med = f", median {c['median_tokens']:.0f} tokens" if c.get("median_tokens") else ""
            console.print(f"[bold]cluster {c['id']}[/bold] ({c['size']} docs{med})" + (f" [{on_axis}]" if on_axis else "") + ": "
                          + ", ".join(escape(_with_quality(l["label"], l.get("quality"))) for l in c["latents"][:5]), highlight=False)
            for ex in c.get("example_docs", [])[:2]:
                fields = " ".join(f"{k}={v}" for k, v in list(ex["fields"].items())[:4])
                console.print(f"    [dim]{escape(ex['doc_id'])}[/dim] {escape(fields)}  {escape(ex['text'][:100])}", highlight=False)
        if r["scores"]:
            sc = r["scores"]
            console.print(f"vs {escape(params.label_field or '')}: accuracy {sc['accuracy']:.3f} (best one-to-one matching), "
                          f"ARI {sc['ari']:.3f}, NMI {sc['nmi']:.3f}", highlight=False)
            tab = sc.get("table")
            if tab:
                t = Table(title=f"clusters x {escape(params.label_field or '')}", title_justify="left")
                t.add_column("cluster")
                for lab in tab["labels"]:
                    t.add_column(escape(lab), justify="right")
                for c, row in enumerate(tab["counts"]):
                    t.add_row(str(c), *(str(x) for x in row))
                console.print(t)
        for w in r.get("warnings", []):
            console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)

    _emit("clusters", res, as_json, fmt, render)


def _with_quality(label: str, quality: float | None) -> str:
    """``label (q 0.87)``: how far the name can be trusted, beside the name."""
    return label if quality is None else f"{label} (q {quality:.2f})"


# The commands this layer adds to `saedex` (composed in server/cli.py), in the order `--help` lists them.
COMMANDS = {
    "diff": diff_cmd,
    "correlations": correlations_cmd,
    "cluster": cluster_cmd,
    "report": report_cmd,
}
