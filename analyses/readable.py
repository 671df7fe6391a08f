"""A diff that reads on its own: rows grouped, split by side, each with an example and one paragraph.

A raw top-k of latents repeats itself (``token "of"`` four times: split features of one token)
and interleaves the two directions, so an auditor cannot write a finding from it. Here:

- rows whose labels are the same, or whose best example fires on the same short text, are one
  group (with the count and the member latents), the strongest row speaking for it;
- groups come as two lists, more in A and more in B;
- each group carries its best example: the document id, the payload fields, and a snippet
  around the firing span with the span's offsets in the snippet;
- :func:`summary` writes one templated paragraph (no LLM) that a reviewer can paste.
"""

from __future__ import annotations

from indexer.encode.pooling import fire_spans
from indexer.store import schema

SNIPPET_CHARS = 90  # context either side of a firing span
SAME_TEXT_MAX = 24  # fired text up to this long (a token or two) groups latents; sentences do not


def snippet(text: str, span: list[int] | None, width: int = SNIPPET_CHARS) -> dict:
    """``text`` around ``span`` (or its start): {"text", "mark": [start, end] within it or None}."""
    if not span:
        cut = text[: 2 * width]
        return {"text": cut + ("…" if len(text) > len(cut) else ""), "mark": None}
    s, e = int(span[0]), int(span[1])
    lo, hi = max(0, s - width), min(len(text), e + width)
    pre, post = ("…" if lo > 0 else ""), ("…" if hi < len(text) else "")
    return {"text": pre + text[lo:hi] + post, "mark": [len(pre) + s - lo, len(pre) + e - lo]}


def example_of(doc_id: str, payload: dict, span: list[int] | None, width: int = SNIPPET_CHARS, view: str = "response") -> dict:
    """A document as an example: its id, a snippet of one view's text around ``span`` and its payload fields."""
    fields = {k: v for k, v in payload.items() if k not in schema.HIDDEN and k not in schema.BOOKKEEPING}
    out = {"doc_id": doc_id, **snippet(view_text(payload, view), span, width), "fields": fields}
    return out | ({"view": view} if view != "response" else {})


def view_text(payload: dict, view: str) -> str:
    return payload.get(schema.VIEW_KEYS[view][0], "") or ""


def pair_example(doc_id: str, payload: dict, sides: list[tuple[str, int]], width: int = SNIPPET_CHARS // 2) -> dict:
    """A document as the example of a latent pair: one snippet per side ((view, latent): the text of
    that view around where the latent fires), so a prompt -> response pair shows both texts."""
    fields = {k: v for k, v in payload.items() if k not in schema.HIDDEN and k not in schema.BOOKKEEPING}
    out: dict = {"doc_id": doc_id, "fields": fields}
    for name, (view, latent) in zip(("a", "b"), sides):
        span = fire_spans(payload, [latent], schema.SPANS_OF[view]).get(latent)
        out[name] = {"view": view, "latent": latent, **snippet(view_text(payload, view), span, width)}
    return out


def fired_text(example: dict | None) -> str | None:
    if not example or not example.get("mark"):
        return None
    s, e = example["mark"]
    t = example["text"][s:e].strip().lower()
    return t if 0 < len(t) <= SAME_TEXT_MAX else None


def group_rows(rows: list[dict]) -> list[dict]:
    """Rows (strongest first) merged by label or by the text their best example fires on."""
    groups: list[dict] = []
    by_key: dict[tuple, dict] = {}
    for r in rows:
        keys = [("label", r["more_in"], (r.get("label") or "").strip().lower())]
        t = fired_text(r.get("example"))
        if t:
            keys.append(("text", r["more_in"], t))
        g = next((by_key[k] for k in keys if k in by_key and k[2]), None)
        if g is None:
            g = {"label": r.get("label", ""), "more_in": r["more_in"], "latents": [], "rows": []}
            for k in ("freq_a", "freq_b", "diff", "diff_length_matched", "p_adj", "quality", "example", "b_slice"):
                if k in r:
                    g[k] = r[k]
            g["fires_on"] = t
            groups.append(g)
        g["latents"].append(r["latent"])
        g["rows"].append(r)
        for k in keys:
            if k[2]:
                by_key.setdefault(k, g)
    for g in groups:
        rs = g.pop("rows")
        g["count"] = len(rs)
        g["p_adj"] = min(x["p_adj"] for x in rs)
        if any("length_driven" in x for x in rs):
            g["length_driven"] = all(x.get("length_driven") for x in rs)
        g["other_labels"] = sorted({x["label"] for x in rs[1:] if x["label"] != g["label"]})[:5]
    return groups


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 or x == 0 else "<1%"


def quoted(label: str) -> str:
    """A label in quotes, unless it quotes itself (``"answers" / "answer"``, ``token "of"``)."""
    return label if '"' in label else f"“{label}”"


def _say(g: dict) -> str:
    n = f" ×{g['count']}" if g["count"] > 1 else ""
    return f"{quoted(g['label'])}{n} ({_pct(g['freq_a'])} vs {_pct(g['freq_b'])})"


def summary(result: dict, name_a: str = "A", name_b: str = "B", n: int = 3) -> str:
    """One paragraph of the diff's strongest, significant, length-matched differences."""
    ln = result.get("length", {})
    ma, mb = ln.get("median_tokens_a"), ln.get("median_tokens_b")
    n_b = result["n_b"] if isinstance(result["n_b"], int) else sum(result["n_b"])
    parts = [f"{name_a} ({result['n_a']:,} documents" + (f", median {ma:.0f} tokens" if ma else "") + f") vs {name_b} "
             f"({n_b:,}" + (f", median {mb:.0f} tokens" if isinstance(mb, (int, float)) else "") + ")."]
    ratio = ln.get("b_over_a")
    corrected = ln.get("correction") == "stratified"
    if corrected:
        parts.append(f"Compared at equal lengths ({ln.get('strata')} length strata): {result['significant']:,} of "
                     f"{result['tested_latents']:,} latents differ (BH q < 0.05)"
                     + (f"; {result['length_driven']:,} more differ in raw counts only, explained by length."
                        if result.get("length_driven") else "."))
        if ln.get("comparable_share", 1.0) < 0.8:
            parts.append(f"Only {_pct(ln['comparable_share'])} of the documents fall in length ranges both slices reach: "
                         "the rest cannot be compared.")
    else:
        parts.append(f"{result['significant']:,} of {result['tested_latents']:,} latents differ (BH q < 0.05), "
                     "without a length correction.")
        if ratio and (ratio > 1.5 or ratio < 1 / 1.5):
            parts.append(f"{name_b} is {ratio:.1f}× as long as {name_a}: longer texts have more latents, so part of this "
                         "difference is length (use the length correction).")
    groups = result.get("groups") or {}
    for side, name in (("a", name_a), ("b", name_b)):
        sig = [g for g in groups.get(side, []) if g["p_adj"] < 0.05 and not g.get("length_driven")]
        if sig:
            parts.append(f"More in {name}: " + "; ".join(_say(g) for g in sig[:n]) + ".")
        else:
            parts.append(f"Nothing is significantly more frequent in {name}.")
    return " ".join(parts)
