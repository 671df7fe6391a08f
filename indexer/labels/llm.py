"""LLM latent labeller: 10 activating + 10 non-activating examples -> {label, description}.

Firing tokens are marked ``<<like this>>``. Answers are cached in the index folder keyed by the
latent's examples hash, so a latent is relabelled only when its examples change (and a second
run costs no tokens). Failures leave the previous (offline) label in place and are counted.
Each new label is scored on the latent's other ten top examples, which the LLM did not see
(:func:`indexer.labels.quality.embedding_qualities`).
"""

from __future__ import annotations

import json
import sys

from indexer.core.llm import LLMClient, require_llm
from indexer.encode.embedder import get_embedder
from indexer.labels.quality import background_windows, embedding_qualities
from indexer.labels.windows import short_window
from indexer.store import Store

SYSTEM = (
    "You label features of a sparse autoencoder trained on a language model. You see text snippets where the "
    "feature fires strongly (the strongest token is marked <<like this>>) and snippets where it does not fire. "
    "Describe the concept, style, tone or pattern the feature detects, as specifically as the evidence allows. "
    'Answer with JSON only: {"label": "<= 8 words", "description": "one or two sentences"}'
)


N_SHOWN = 10  # activating examples the LLM reads; the rest of a latent's top 20 score its label


def format_examples(payload: dict, n_pos: int = N_SHOWN, n_neg: int = 10) -> str:
    lines = ["Activating examples:"]
    for i, ex in enumerate(payload.get("examples", [])[:n_pos], 1):
        t, span = ex["text"], ex.get("span")
        if span:
            t = t[: span[0]] + "<<" + t[span[0] : span[1]] + ">>" + t[span[1] :]
        lines.append(f"{i}. {t.strip()}".replace("\n", " "))
    negs = payload.get("negatives", [])[:n_neg]
    if negs:
        lines.append("\nNon-activating examples:")
        for i, ex in enumerate(negs, 1):
            lines.append(f"{i}. {ex['text'][:200].strip()}".replace("\n", " "))
    return "\n".join(lines)


LABEL_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["label", "description"],
                "properties": {"label": {"type": "string", "maxLength": 80}, "description": {"type": "string", "maxLength": 300}}}
LABEL_MAX_TOKENS = 60  # a label and a sentence; longer answers are rambling (or a small model echoing examples)


def held_out_windows(payload: dict, shown: int = N_SHOWN) -> list[str]:
    """Short windows around the firing tokens of the examples the LLM was not shown."""
    return [short_window(ex["text"], ex["span"]) for ex in payload.get("examples", [])[shown:] if ex.get("span")]


def label_with_llm(store: Store, model: str | None, ids: list[int] | None = None, min_docs: int = 3,
                   concurrency: int | None = None, progress: bool = True) -> dict:
    model = require_llm(model, "LLM labelling")
    client = LLMClient(model)
    cache_file = store.cache_file("llm_labels_cache.json")
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    pts = store.get_latents(ids, with_vectors=True) if ids is not None else store.get_latents(with_vectors=True)
    pts = [p for p in pts if p.payload.get("doc_count", 0) >= min_docs and p.payload.get("examples")]
    todo, cached = [], 0
    for p in pts:
        key = f"{model}:{p.latent}:{p.payload.get('examples_hash')}"
        if key in cache:
            cached += 1
            p.payload.update({"quality": None, **cache[key]})  # an answer cached before scores: no score, not the old label's
        else:
            todo.append((key, p))
    if progress:
        print(f"LLM labelling {len(todo)} latents ({cached} cached) with {model}", file=sys.stderr)

    def one(item):
        key, p = item
        ans = client.chat_json(SYSTEM, format_examples(p.payload), max_tokens=LABEL_MAX_TOKENS, schema=LABEL_SCHEMA)
        if not isinstance(ans, dict) or not str(ans.get("label", "")).strip():
            raise ValueError(f"latent {p.latent}: answer without a label: {ans!r}")
        return key, {"label": str(ans["label"]).strip()[:120], "description": str(ans.get("description", "")).strip()[:600],
                     "label_source": f"llm:{model}"}

    results = client.map(one, todo, concurrency=concurrency)
    failed = 0
    changed = []
    fresh: list[tuple[str, object]] = []
    for (key, p), res in zip(todo, results):
        if isinstance(res, Exception):
            failed += 1
            continue
        cache[res[0]] = res[1]
        p.payload.update(res[1])
        changed.append(p)
        fresh.append((res[0], p))
    changed += [p for p in pts if p not in changed and p.payload.get("label_source", "").startswith("llm:")]
    if changed:
        emb = get_embedder()
        vecs = emb.encode([f"{p.payload['label']}. {p.payload.get('description', '')}" for p in changed])
        for p, v in zip(changed, vecs):
            p.label_vec = v.tolist()
            p.snippet_vec = p.snippet_vec or v.tolist()
        # The previous label's score does not describe this one: measure it (held-out examples) or say none.
        vec_of = {p.latent: v for p, v in zip(changed, vecs)}
        qualities = embedding_qualities([(p.latent, vec_of[p.latent], held_out_windows(p.payload)) for _, p in fresh],
                                        background_windows(store) if fresh else [], emb)
        for key, p in fresh:
            p.payload["quality"] = cache[key]["quality"] = qualities.get(p.latent)
        store.upsert_latents(changed)
    cache_file.write_text(json.dumps(cache))
    return {"labelled": len(todo) - failed, "cached": cached, "failed": failed, "model": model, "usage": client.usage.as_dict()}


class LLMLabeller:
    """Labels by any OpenAI-compatible model (``saedex label --llm``); its labels carry
    ``label_source = "llm:MODEL"``."""

    name = "llm"

    def __init__(self, model: str | None = None):
        self.model = model

    @staticmethod
    def keeps(payload: dict, dictionary_has_it: bool) -> bool:
        """An LLM label was paid for: it stays while the latent's examples do."""
        return True

    def label_store(self, store: Store, ids: list[int] | None = None, min_docs: int = 3, concurrency: int | None = None,
                    progress: bool = True) -> dict:
        return label_with_llm(store, self.model, ids, min_docs, concurrency, progress)
