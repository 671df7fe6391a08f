"""`saedex latents`, `latent`, `search`, `document` and `eval-retrieval`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from indexer.core.cli import JsonOpt, UrlOpt, console, emit, friendly_errors
from indexer.core.params import cli_command
from indexer.store import open_store, schema
from indexer.store.catalog import latent_detail
from search.engine import SearchEngine, SearchOptions
from search.evaluate import evaluate, load_queries
from search.latents import LatentsParams, list_latents
from search.params import SearchParams


@friendly_errors
@cli_command(SearchParams)
def search_cmd(
    params: SearchParams,
    index: str = typer.Option(..., "--index"),
    llm: Optional[str] = typer.Option(None, "--llm", help="LLM model name (default: $SAEDEX_LLM_MODEL)."),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Property search with explanations (or the BM25 / dense / hybrid baselines)."""
    opts = SearchOptions.of(params, llm_model=llm)
    with open_store(index, qdrant_url) as store:
        out = SearchEngine(store, index).search(params.query, opts)
    emit(out, as_json, _render)


@friendly_errors
def document_cmd(doc_id: str = typer.Argument(..., help="Document id."), index: str = typer.Option(..., "--index"),
                 top: int = typer.Option(15, "--top", help="Strongest latents to show (1..200)."),
                 qdrant_url: Optional[str] = UrlOpt, as_json: bool = JsonOpt):
    """A document with its strongest latents and where they fire."""
    with open_store(index, qdrant_url) as store:
        out = SearchEngine(store, index).document(doc_id, top)

    def render(d: dict) -> None:
        if "prompt" in d:
            console.print("[dim]prompt:[/dim] " + _highlight(d["prompt"][:2000], sorted({tuple(s) for l in d["prompt_latents"]
                                                                                      for s in l["spans"]})))
            console.print("[dim]response:[/dim]")
        spans = sorted({tuple(s) for l in d["latents"] for s in l["spans"]})
        console.print(_highlight(d["text"][:2000], spans))
        t = Table()
        for c in ("latent", "label", "activation", "x p90"):
            t.add_column(c)
        for l in d["latents"]:
            t.add_row(str(l["latent"]), escape(l["label"]), f"{l['activation']:.2f}", f"{l['relative']:.2f}")
        console.print(t)

    emit(out, as_json, render)


def _render(out: dict) -> None:
    if out.get("latents"):
        console.print("[bold]query latents:[/bold] " + ", ".join(
            f"{l['latent']}:{escape(l['label'])} ({l['weight']:.2f})" for l in out["latents"][:8]), highlight=False)
    t = Table(show_lines=True)
    t.add_column("#", justify="right")
    t.add_column("score")
    t.add_column("document (firing spans highlighted)", overflow="fold")
    t.add_column("why", overflow="fold")
    for n, r in enumerate(out["results"], out.get("offset", 0) + 1):
        spans = sorted({tuple(s) for e in r["explanation"] for s in e["spans"]})
        fields = " ".join([f"{k}={v}" for k, v in (r.get("fields") or {}).items() if k not in schema.BOOKKEEPING][:6])
        head = f"[dim]{escape(r['id'])}  {escape(fields)}[/dim]\n" if fields or r.get("id") else ""
        body = _highlight(r["text"][:600], spans if r.get("view") != "prompt" else [])
        if "prompt" in r:  # a two-view record: its prompt, then its response; the view ranked carries the marks
            body = (f"[dim]prompt:[/dim] {_highlight(r['prompt'][:300], spans if r.get('view') == 'prompt' else [])}\n"
                    f"[dim]response:[/dim] {body}")
        score = f"{r['score']:.3f}" + (f"\n[dim]-{r['length_baseline']:.3f}\nfor its\nlength[/dim]" if "length_baseline" in r else "")
        why = [f"{escape(e['label'])} ({e['activation']:.1f})" for e in r["explanation"][:3]]
        why += [f"[dim]against: {escape(e['label'])} ({e['activation']:.1f})[/dim]" for e in r.get("against", [])[:1]]
        t.add_row(str(n), score, head + body, "\n".join(why))
    console.print(t)


def _highlight(text: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for s, e in spans:
        if s < pos or s >= len(text):
            continue
        out.append(escape(text[pos:s]))
        out.append("[reverse]" + escape(text[s:e]) + "[/reverse]")
        pos = e
    out.append(escape(text[pos:]))
    return "".join(out)


@friendly_errors
def eval_cmd(
    index: str = typer.Option(..., "--index"),
    queries: Path = typer.Option(..., "--queries", help="JSONL of {query, where, rule|relevant}."),
    methods: str = typer.Option("sae,bm25,dense,hybrid", "--methods"),
    temperature: float = typer.Option(0.2, "--temperature"),
    n_latents: int = typer.Option(100, "--n-latents"),
    label_weight: float = typer.Option(0.5, "--label-weight", help="Weight of label vs snippet similarity."),
    max_doc_freq: float = typer.Option(0.5, "--max-doc-freq"),
    feedback: int = typer.Option(SearchParams.model_fields["feedback"].default, "--feedback",
                                 help="Pseudo-relevance feedback documents (0 = off)."),
    family: str = typer.Option("all", "--family", help="SAE family the sae/hybrid methods rank by: token | concept | all."),
    length_neutral: bool = typer.Option(False, "--length-neutral", help="Rank the sae method length-neutral (see `search --help`)."),
    meaning_weight: float = typer.Option(SearchParams.model_fields["meaning_weight"].default, "--meaning-weight", min=0, max=10,
                                         help="The sae method's term for the query's meaning through concept latents (0 = off; README)."),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """AP per query, MAP, P@10 and MP@50 for every method side by side."""
    qs = load_queries(queries)
    ms = [m.strip() for m in methods.split(",") if m.strip()]
    base = SearchOptions.parse(temperature=temperature, n_latents=n_latents, label_weight=label_weight, max_doc_freq=max_doc_freq,
                               feedback=feedback, family=family, length_neutral=length_neutral, meaning_weight=meaning_weight)
    with open_store(index, qdrant_url) as store:
        res = evaluate(SearchEngine(store, index), qs, ms, base)

    def render(r: dict) -> None:
        t = Table(title=f"retrieval on {index} (AP; base rate in brackets)")
        t.add_column("query")
        for m in ms:
            t.add_column(m, justify="right")
        for q in r["queries"]:
            best = max(q["methods"][m]["ap"] for m in ms)
            t.add_row(f"{q['name']} ({q['base_rate']:.3f})", *[
                (f"[bold]{q['methods'][m]['ap']:.3f}[/bold]" if q["methods"][m]["ap"] == best else f"{q['methods'][m]['ap']:.3f}") for m in ms])
        for key in ("map", "mp@10", "mp@50"):
            t.add_row(key.upper(), *[f"{r['summary'][m][key]:.3f}" for m in ms])
        console.print(t)

    emit(res, as_json, render)


@friendly_errors
@cli_command(LatentsParams)
def latents_cmd(params: LatentsParams, index: str = typer.Option(..., "--index"), qdrant_url: Optional[str] = UrlOpt,
                as_json: bool = JsonOpt):
    """Top latents by document frequency, or by similarity to --query."""
    with open_store(index, qdrant_url) as store:
        out = list_latents(store, index, params)
    emit(out, as_json, _render_latents)


@friendly_errors
def latent_cmd(latent: int = typer.Argument(..., help="Latent id."), index: str = typer.Option(..., "--index"),
               qdrant_url: Optional[str] = UrlOpt, as_json: bool = JsonOpt):
    """One latent: label, kind, quality, 20 activating examples and its negatives."""
    with open_store(index, qdrant_url) as store:
        out = latent_detail(store, index, latent)
    emit(out, as_json, lambda o: _render_latents({"latents": [o]}))


def _render_latents(obj: dict) -> None:
    t = Table(title="latents")
    for col in ("id", "label", "family", "kind", "quality", "doc freq", "example (where it fires: a token or a sentence, in \\[brackets])"):
        t.add_column(col, overflow="fold")
    for lat in obj["latents"]:
        ex = next((e for e in lat["examples"] if e.get("span")), None)
        shown = ""
        if ex:
            s, e = ex["span"]
            shown = (ex["text"][max(0, s - 50):s] + "[" + ex["text"][s:e] + "]" + ex["text"][e:e + 50]).replace("\n", " ")
        q = lat.get("quality")
        t.add_row(str(lat["id"]), escape(lat["label"]), lat.get("family", "token"), lat.get("kind", ""), f"{q:.2f}" if q is not None else "-",
                  f"{lat['doc_freq']:.3f}", escape(shown))
    console.print(t)


# The commands this layer adds to `saedex` (composed in server/cli.py), in the order `--help` lists them.
COMMANDS = {
    "latents": latents_cmd,
    "latent": latent_cmd,
    "search": search_cmd,
    "document": document_cmd,
    "eval-retrieval": eval_cmd,
}
