"""Analysis results as files an auditor attaches to a finding: CSV, Markdown, HTML (``--format``).

One flat table per analysis (written once here, for the CLI and the report): a diff's groups
(both sides, strongest first), correlation pairs, clusters. Example snippets carry their firing
span: ``[[...]]`` in CSV, bold in Markdown, ``<mark>`` in HTML.
"""

from __future__ import annotations

import csv
import html
import io
from typing import Callable

FORMATS = ("table", "json", "csv", "md", "html")


def marked(example: dict | None, style: str) -> str:
    """An example's snippet with its firing span marked (``style``: csv | md | html)."""
    if not example:
        return ""
    text, mark = example.get("text", ""), example.get("mark")
    if not mark:
        return html.escape(text) if style == "html" else text
    pre, span, post = text[: mark[0]], text[mark[0] : mark[1]], text[mark[1] :]
    lead, trail = span[: len(span) - len(span.lstrip())], span[len(span.rstrip()) :]
    pre, span, post = pre + lead, span.strip(), trail + post  # "** word**" is not bold in Markdown
    if style == "html":
        return f"{html.escape(pre)}<mark>{html.escape(span)}</mark>{html.escape(post)}"
    if style == "md":
        return f"{_md(pre)}**{_md(span)}**{_md(post)}"
    return f"{pre}[[{span}]]{post}"


def _md(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def diff_table(r: dict, style: str) -> tuple[list[str], list[list[str]]]:
    heads = ["more in", "label", "latents", "freq A", "freq B", "diff", "diff at equal length", "p_adj", "length-driven",
             "example id", "example"]
    rows = []
    share = (lambda x: f"{x:.5f}") if style == "csv" else _pct  # CSV: numbers a spreadsheet reads
    for side in ("a", "b"):
        for g in r.get("groups", {}).get(side, []):
            ex = g.get("example") or {}
            rows.append([side.upper(), g["label"] + (f" (+{g['count'] - 1})" if g["count"] > 1 else ""),
                         " ".join(str(x) for x in g["latents"]), share(g["freq_a"]), share(g["freq_b"]), f"{g['diff']:+.3f}",
                         "" if g.get("diff_length_matched") is None else f"{g['diff_length_matched']:+.3f}",
                         f"{g['p_adj']:.2g}", {True: "yes", False: "no"}.get(g.get("length_driven"), ""),
                         ex.get("doc_id", ""), marked(ex, style)])
    return heads, rows


def correlations_table(r: dict, style: str) -> tuple[list[str], list[list[str]]]:
    heads = ["latent a", "label a", "latent b", "label b", "npmi", "npmi at equal length", "length-driven", "documents",
             "label similarity", "examples"]
    return heads, [[str(p["a"]), p["label_a"], str(p["b"]), p["label_b"], f"{p['npmi']:.3f}",
                    "" if p.get("npmi_length_matched") is None else f"{p['npmi_length_matched']:.3f}",
                    {True: "yes", False: "no"}.get(p.get("length_driven"), ""), str(p["count"]),
                    f"{p['label_sim']:.2f}", " ".join(p["examples"][:3])] for p in r["pairs"]]


def clusters_table(r: dict, style: str) -> tuple[list[str], list[list[str]]]:
    heads = ["cluster", "size", "median tokens", "axis value", "majority label", "top latents", "examples"]
    rows = []
    for c in r["clusters"]:
        rows.append([str(c["id"]), str(c["size"]), "" if c.get("median_tokens") is None else f"{c['median_tokens']:.0f}",
                     ", ".join(v["value"] for v in c.get("axis_values", [])),
                     c.get("majority_label", "") or "", "; ".join(x["label"] for x in c["latents"][:5]),
                     " ".join(c["examples"][:3])])
    return heads, rows


TABLES: dict[str, Callable[[dict, str], tuple[list[str], list[list[str]]]]] = {
    "diff": diff_table, "correlations": correlations_table, "clusters": clusters_table}


def to_csv(heads: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(heads)
    w.writerows(rows)
    return buf.getvalue()


def to_markdown(heads: list[str], rows: list[list[str]]) -> str:
    esc = [h.replace("|", "\\|") for h in heads]
    lines = ["| " + " | ".join(esc) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(c if "**" in c else _md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(heads: list[str], rows: list[list[str]], raw_last: bool = True) -> str:
    """An HTML table; the last column (an example already escaped and marked) is not escaped again."""
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr></thead><tbody>"]
    for row in rows:
        cells = [html.escape(c) for c in row[:-1]] + [row[-1] if raw_last else html.escape(row[-1])]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;width:100%;margin:1em 0}th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f4f4f4}mark{background:#ffe066}.summary{background:#f7f9fc;border-left:4px solid #3b7dd8;padding:.8em 1em}
.warn{color:#9a3412}img{max-width:100%}code{background:#f2f2f2;padding:0 3px}"""


def html_page(title: str, body: str) -> str:
    """A self-contained page: inline CSS, no script, no external fetch."""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def render(kind: str, result: dict, fmt: str) -> str:
    """``result`` of analysis ``kind`` (diff | correlations | clusters) as csv | md | html."""
    style = {"csv": "csv", "md": "md", "html": "html"}[fmt]
    heads, rows = TABLES[kind](result, style)
    if fmt == "csv":
        return to_csv(heads, rows)
    lead = result.get("summary", "")
    if fmt == "md":
        return (f"{lead}\n\n" if lead else "") + to_markdown(heads, rows)
    raw_last = kind == "diff"
    body = (f"<p class=summary>{html.escape(lead)}</p>" if lead else "") + html_table(heads, rows, raw_last=raw_last)
    return html_page(f"saedex {kind}", body)
