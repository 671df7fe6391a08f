"""``saedex report --a ... --b ...``: one self-contained HTML file an auditor attaches to a finding.

What it holds, in reading order: the templated summary; the slices' lengths (a histogram: the
confound) and what the length correction changed (significant latents before and after, and
the raw top rows it explained away); the differences at equal lengths as a chart and as two
tables (more in A, more in B), each group with up to three examples whose firing spans are
marked, with their ids and payload fields. No script, no external fetch: images are inline.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from analyses.diff import diff
from analyses.formats import html_page, marked
from analyses.length import slice_lengths
from analyses.params import DiffParams
from analyses.plots import plot_diff, plot_lengths
from analyses.readable import example_of, quoted
from indexer.store import Filter, Store
from indexer.store.catalog import require_index
from indexer.store.columns import fresh_copy

EXAMPLES_PER_GROUP = 3


def _png(draw) -> str:
    buf = io.BytesIO()
    draw(buf)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _examples(store: Store, groups: list[dict], rows_by_latent: dict[int, dict]) -> dict[int, list[dict]]:
    """Up to EXAMPLES_PER_GROUP marked snippets per group (from its strongest row's examples)."""
    want = {}
    for g in groups:
        r = rows_by_latent[g["latents"][0]]
        want[g["latents"][0]] = [(d, r["example_spans"].get(d)) for d in r["examples"][:EXAMPLES_PER_GROUP]]
    ids = sorted({d for v in want.values() for d, _ in v})
    docs = {h.doc_id: h.payload for h in store.get_docs(ids)} if ids else {}
    return {lat: [example_of(d, docs.get(d, {}), span) for d, span in v] for lat, v in want.items()}


def _group_table(groups: list[dict], examples: dict[int, list[dict]], corrected: bool) -> str:
    if not groups:
        return "<p>None among the latents reported.</p>"
    out = ["<table><thead><tr><th>label</th><th>latents</th><th>freq A</th><th>freq B</th>"
           f"<th>{'difference at equal length' if corrected else 'difference'}</th><th>p (BH)</th><th>examples</th></tr></thead><tbody>"]
    for g in groups:
        d = g.get("diff_length_matched") if corrected else g["diff"]
        exs = "".join(f"<div><code>{html.escape(e['doc_id'])}</code> "
                      + (" ".join(f"<small>{html.escape(str(k))}={html.escape(str(v))}</small>" for k, v in list(e["fields"].items())[:4]))
                      + f"<br>{marked(e, 'html')}</div>" for e in examples.get(g["latents"][0], []))
        flag = " <span class=warn>(length-driven)</span>" if g.get("length_driven") else ""
        out.append(f"<tr><td>{html.escape(g['label'])}{flag}</td><td>{' '.join(str(x) for x in g['latents'])}</td>"
                   f"<td>{g['freq_a']:.1%}</td><td>{g['freq_b']:.1%}</td><td>{d:+.3f}</td><td>{g['p_adj']:.2g}</td><td>{exs}</td></tr>")
    return "".join(out) + "</tbody></table>"


def build_report(store: Store, index: str, params: DiffParams, llm_model: str | None = None) -> tuple[str, dict]:
    """The report's HTML and the diff result it was made from."""
    res = diff(store, index, params, llm_model=llm_model)
    raw = diff(store, index, params.model_copy(update={"length": "none", "hypotheses": 0}), n_examples=0) \
        if params.length == "stratified" else None
    name_a = Filter(params.a).describe(" & ")
    name_b = " | ".join(Filter(x).describe(" & ") for x in params.b_slices())
    copy = fresh_copy(store, require_index(store, index).recipe)
    la = slice_lengths(copy, Filter(params.a)).tokens
    lbs = [slice_lengths(copy, Filter(x)).tokens for x in params.b_slices()]
    corrected = res["length"].get("correction") == "stratified"
    rows_by_latent = {r["latent"]: r for r in res["latents"]}
    examples = _examples(store, res["groups"]["a"] + res["groups"]["b"], rows_by_latent)
    parts = [f"<p><b>Index</b> <code>{html.escape(index)}</code> · <b>A</b>: <code>{html.escape(name_a)}</code> "
             f"({res['n_a']:,} documents) · <b>B</b>: <code>{html.escape(name_b)}</code></p>",
             f"<p class=summary>{html.escape(res['summary'])}</p>", "<h2>Document length</h2>"]
    if la is not None and all(lb is not None for lb in lbs):
        lb_all = np.concatenate(lbs)
        parts.append(_png(lambda buf: plot_lengths(la, lb_all, buf, "A", "B")))
    if raw is not None:
        raw_top = raw["latents"][:10]
        explained = sum(1 for r in raw_top if r["latent"] not in {x["latent"] for x in res["latents"] if x["p_adj"] < 0.05})
        parts.append(f"<p>Without the length correction {raw['significant']:,} latents differ (BH q &lt; 0.05); at equal "
                     f"lengths {res['significant']:,}. Of the raw diff's top 10, {explained} are not significant at equal lengths: "
                     + html.escape("; ".join(f"{quoted(r['label'])} ({r['freq_a']:.0%} vs {r['freq_b']:.0%})" for r in raw_top)) + ".</p>")
    parts.append("<h2>Differences" + (" at equal lengths" if corrected else "") + "</h2>")
    parts.append(_png(lambda buf: plot_diff(res, buf, "A", "B")))
    parts.append("<h3>More in A</h3>" + _group_table(res["groups"]["a"], examples, corrected))
    parts.append("<h3>More in B</h3>" + _group_table(res["groups"]["b"], examples, corrected))
    for h in res.get("hypotheses", {}).get("hypotheses", []):
        parts.append(f"<p>Hypothesis: {html.escape(h['hypothesis'])} — verified {h['verified_freq_a']:.0%} vs {h['verified_freq_b']:.0%}</p>")
    parts.append("<p><small>saedex diff: document frequency of each SAE latent, compared within strata of similar "
                 "document length (Cochran–Mantel–Haenszel test, Benjamini–Hochberg adjusted). Spans mark where the "
                 "latent fires most in each example.</small></p>")
    return html_page(f"saedex report: {name_a} vs {name_b}", "".join(parts)), res


def write_report(store: Store, index: str, params: DiffParams, path: str | Path, llm_model: str | None = None) -> dict:
    page, res = build_report(store, index, params, llm_model)
    Path(path).write_text(page, encoding="utf-8")
    return {"path": str(path), "bytes": len(page.encode()), "summary": res["summary"], "significant": res["significant"],
            "groups_a": len(res["groups"]["a"]), "groups_b": len(res["groups"]["b"])}
