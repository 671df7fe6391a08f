"""The optional LLM steps of property search: latent filtering, query expansion, reranking.

All go through :class:`indexer.core.llm.LLMClient` (any OpenAI-compatible endpoint). Without an LLM
configured they raise :class:`LLMNotConfigured` with a message saying what to set.
"""

from __future__ import annotations

from indexer.core.llm import LLMClient, LLMUnavailable, require_llm
from indexer.store import Hit

RERANK_TOP = 50
_clients: dict[str, LLMClient] = {}


def _client(model: str | None, what: str) -> LLMClient:
    m = require_llm(model, what)
    if m not in _clients:
        _clients[m] = LLMClient(m)
    return _clients[m]


def llm_filter_latents(query: str, latents: list[tuple[int, str, str]], model: str | None) -> set[int]:
    """Keep only the latents whose label is relevant to the searched property."""
    c = _client(model, "--llm-filter")
    listing = "\n".join(f"{i}: {label} — {desc[:120]}" for i, label, desc in latents)
    ans = c.chat_json(
        "You select sparse-autoencoder features relevant to a search for documents with a given property. "
        'Answer with JSON only: {"keep": [feature ids]}.',
        f"Property searched: {query}\n\nFeatures (id: label — description):\n{listing}",
        max_tokens=600,
    )
    keep = ans.get("keep", []) if isinstance(ans, dict) else ans
    return {int(x) for x in keep if str(x).lstrip("-").isdigit()}


def llm_expand(query: str, n: int, model: str | None) -> list[str]:
    """N short example texts that have the property (their SAE latents join the query)."""
    c = _client(model, "--expand")
    ans = c.chat_json(
        "You write short example texts (one or two sentences each) that clearly have a given property. "
        'Answer with JSON only: {"examples": ["...", ...]}.',
        f"Property: {query}\nWrite {n} diverse examples.",
        max_tokens=80 * n + 50,
    )
    ex = ans.get("examples", []) if isinstance(ans, dict) else ans
    return [str(e) for e in ex if str(e).strip()][:n]


def llm_rerank(query: str, hits: list[Hit], model: str | None, top: int = RERANK_TOP, batch: int = 10) -> tuple[list[Hit], dict]:
    """Score the top ``top`` hits 0-10 for the property; reorder them (stable), keep the tail."""
    c = _client(model, "--rerank")
    head, tail = hits[:top], hits[top:]
    batches = [head[s : s + batch] for s in range(0, len(head), batch)]

    def score(group: list[Hit]) -> list[float]:
        listing = "\n".join(f"[{j}] {h.payload.get('text', '')[:500]}".replace("\n", " ") for j, h in enumerate(group))
        ans = c.chat_json(
            "You judge how strongly each document has a property, from 0 (not at all) to 10 (clearly). "
            'Answer with JSON only: {"scores": [one number per document, in order]}.',
            f"Property: {query}\n\nDocuments:\n{listing}",
            max_tokens=20 + 6 * len(group),
        )
        s = ans.get("scores", []) if isinstance(ans, dict) else ans
        if len(s) != len(group):
            raise ValueError(f"reranker returned {len(s)} scores for {len(group)} documents")
        return [float(x) for x in s]

    results = c.map(score, batches)
    llm_scores: list[float | None] = []
    failed = 0
    for group, res in zip(batches, results):
        if isinstance(res, Exception):
            failed += len(group)
            llm_scores.extend([None] * len(group))
        else:
            llm_scores.extend(res)
    order = sorted(range(len(head)), key=lambda i: (-(llm_scores[i] if llm_scores[i] is not None else -1), i))
    reranked = []
    for i in order:
        h = head[i]
        h.payload = {**h.payload, "llm_score": llm_scores[i]}
        reranked.append(h)
    status = "ok" if not failed else ("failed" if failed == len(head) else "partial")
    info = {"model": c.model, "status": status, "reranked": len(head) - failed, "failed": failed, "usage": c.usage.as_dict()}
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:  # the reason, as clients may see it (the endpoint's status, never its message)
        info["error"] = str(errors[0]) if isinstance(errors[0], LLMUnavailable) else "LLM answer unusable"
    return reranked + tail, info
