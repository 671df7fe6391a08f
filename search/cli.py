"""`saedex search` and `saedex eval-retrieval`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from indexer.cli_common import JsonOpt, UrlOpt, console, emit, friendly_errors


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
    app.command("eval-retrieval")(eval_cmd)


def _engine(index: str, qdrant_url: str | None):
    from indexer.store import open_store
    from search.engine import SearchEngine

    store = open_store(index, qdrant_url)
    return store, SearchEngine(store, index)


@friendly_errors
def search_cmd(
    query: Optional[str] = typer.Argument(None, help="The property to search for, e.g. 'sarcastic remark'."),
    index: str = typer.Option(..., "--index"),
    k: int = typer.Option(10, "--k", help="Number of results (1..10000)."),
    offset: int = typer.Option(0, "--offset", help="Skip this many results (pagination; offset + k <= 10000)."),
    method: str = typer.Option("sae", "--method", help="sae | bm25 | dense | hybrid"),
    where: Optional[List[str]] = typer.Option(None, "--where", help="key=value payload filter; repeatable (same key = any of)."),
    rerank: bool = typer.Option(False, "--rerank", help="LLM reranks the top 50."),
    expand: int = typer.Option(0, "--expand", help="LLM writes N example phrases whose latents join the query."),
    like: Optional[str] = typer.Option(None, "--like", help="Rank documents sharing this document's strongest latents."),
    temperature: float = typer.Option(0.2, "--temperature", help="Rank-weight temperature T in w=exp(-(r/n)/T)."),
    n_latents: int = typer.Option(100, "--n-latents", help="Latents taken per query."),
    llm_filter: bool = typer.Option(False, "--llm-filter", help="LLM keeps only the relevant latents."),
    llm: Optional[str] = typer.Option(None, "--llm", help="LLM model name (default: $SAEDEX_LLM_MODEL)."),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Property search with explanations (or the BM25 / dense / hybrid baselines)."""
    from search.engine import SearchOptions
    from search.filters import parse_where

    opts = SearchOptions(k=k, offset=offset, method=method, where=parse_where(where), rerank=rerank, expand=expand, like=like,
                         temperature=temperature, n_latents=n_latents, llm_filter=llm_filter, llm_model=llm)
    opts.validate(query)
    store, engine = _engine(index, qdrant_url)
    try:
        out = engine.search(query, opts)
    finally:
        store.close()
    emit(out, as_json, _render)


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
        t.add_row(str(n), f"{r['score']:.3f}", _highlight(r["text"][:600], spans),
                  "\n".join(f"{escape(e['label'])} ({e['activation']:.1f})" for e in r["explanation"][:3]))
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
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """AP per query, MAP, P@10 and MP@50 for every method side by side."""
    from search.engine import SearchOptions
    from search.evaluate import evaluate, load_queries

    qs = load_queries(queries)
    ms = [m.strip() for m in methods.split(",") if m.strip()]
    store, engine = _engine(index, qdrant_url)
    try:
        res = evaluate(engine, qs, ms, SearchOptions(temperature=temperature, n_latents=n_latents,
                                                     label_weight=label_weight, max_doc_freq=max_doc_freq))
    finally:
        store.close()

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
