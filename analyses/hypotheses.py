"""LLM step of diffing: merge top latents into hypotheses, then verify each with an LLM judge.

The latents say *that* A and B differ; a hypothesis says it in words ("A's texts address the
reader directly"). Each hypothesis is checked on a sample of A and B documents (yes/no per
document) so the reported difference is verified, not just asserted.
"""

from __future__ import annotations

import random

from analyses.matrix import DocMatrix
from indexer.core.llm import LLMClient, require_llm
from indexer.store import Store


def hypothesize_and_verify(store: Store, rows: list[dict], A: DocMatrix, B: DocMatrix, n: int, model: str | None,
                           sample: int = 20) -> dict:
    client = LLMClient(require_llm(model, "--hypotheses"))
    listing = "\n".join(f"- {r['label']} (in {r['freq_a']:.1%} of A vs {r['freq_b']:.1%} of B)" for r in rows[:30])
    ans = client.chat_json(
        "You turn statistical differences between two text collections into short, testable hypotheses. "
        'Answer with JSON only: {"hypotheses": ["Texts in A ... more often than texts in B", ...]}.',
        f"Features that differ between collection A and B:\n{listing}\n\nWrite at most {n} hypotheses.",
        max_tokens=120 * n + 50,
    )
    hyps = [str(h) for h in (ans.get("hypotheses", []) if isinstance(ans, dict) else ans)][:n]
    rng = random.Random(0)
    ids_a = rng.sample(A.doc_ids, min(sample, A.n_docs))
    ids_b = rng.sample(B.doc_ids, min(sample, B.n_docs))
    texts = {h.doc_id: h.payload.get("text", "") for h in store.get_docs(ids_a + ids_b)}

    def judge(item):
        hyp, doc_id = item
        a = client.chat_json(
            "You check whether a single text has the property described. Answer with JSON only: {\"answer\": \"yes\"|\"no\"}.",
            f"Property (ignore the A/B wording, judge the text alone): {hyp}\n\nText:\n{texts.get(doc_id, '')[:1500]}",
            max_tokens=10,
        )
        return str(a.get("answer", "")).lower().startswith("y") if isinstance(a, dict) else False

    out = []
    for hyp in hyps:
        res_a = client.map(judge, [(hyp, d) for d in ids_a])
        res_b = client.map(judge, [(hyp, d) for d in ids_b])
        ok_a = [r for r in res_a if isinstance(r, bool)]
        ok_b = [r for r in res_b if isinstance(r, bool)]
        fa = sum(ok_a) / max(len(ok_a), 1)
        fb = sum(ok_b) / max(len(ok_b), 1)
        out.append({"hypothesis": hyp, "verified_freq_a": round(fa, 3), "verified_freq_b": round(fb, 3),
                    "verified_diff": round(fa - fb, 3), "judged": len(ok_a) + len(ok_b)})
    return {"hypotheses": out, "usage": client.usage.as_dict()}
