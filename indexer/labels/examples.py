"""A latent's examples: the passages of its top documents around the token where it peaks."""

from __future__ import annotations

import hashlib

from indexer.encode.pooling import fire_spans
from indexer.labels.windows import snippet


def examples_hash(doc_ids: list[str]) -> str:
    """Identifies a latent's examples: a label stays while this does."""
    return hashlib.sha256("\x1f".join(doc_ids).encode()).hexdigest()[:16]


def distinct_examples(examples: list[dict], rows: list[int], n: int) -> tuple[list[dict], list[int]]:
    """The first ``n`` examples whose passage (snippet and span) is not shown already.

    The same passage in two documents (agency copy, an article posted twice: the BBC corpus has
    both) is one example; shown twice it takes the place of other evidence and doubles its
    weight in the label."""
    out, out_rows, seen = [], [], set()
    for ex, r in zip(examples, rows):
        key = (ex["text"], tuple(ex.get("span") or ()))
        if key in seen:
            continue
        seen.add(key)
        out.append(ex)
        out_rows.append(r)
        if len(out) == n:
            break
    return out, out_rows


def build_examples(stats: dict[int, dict], payloads: dict[int, dict], doc_ids: list[str],
                   n: int) -> tuple[dict[int, list[dict]], dict[int, list[int]]]:
    """latent -> its first ``n`` distinct examples, and the document row of each (for label quality).

    One decode of ``_fires`` per document: which of the requested latents peak where."""
    wanted: dict[int, list[int]] = {}
    for latent, st in stats.items():
        for r in st["top_rows"]:
            wanted.setdefault(r, []).append(latent)
    spans_by_row = {r: fire_spans(payloads[r], lats) for r, lats in wanted.items() if r in payloads}
    built: dict[int, list[dict]] = {}
    example_rows: dict[int, list[int]] = {}
    for latent, st in stats.items():
        examples, rows = [], []
        for r, v in zip(st["top_rows"], st["top_values"]):
            p = payloads.get(r)
            if p is None:
                continue
            span = spans_by_row.get(r, {}).get(latent)
            ex = {"doc_id": doc_ids[r], "activation": round(float(v), 4), "dataset": p.get("dataset")}
            if span:
                ex.update(snippet(p["text"], span))
                ex["doc_span"] = span
            else:
                ex.update({"text": p["text"][:200], "span": None})
            examples.append(ex)
            rows.append(r)
        built[latent], example_rows[latent] = distinct_examples(examples, rows, n)
    return built, example_rows
