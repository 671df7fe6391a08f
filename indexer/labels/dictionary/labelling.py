"""Stage 4 of the dictionary build: what each latent does, named by discrimination, with a score.

For every latent with enough contexts:
- **direction**: mean MiniLM embedding of its activating contexts minus the mean of background
  contexts it does not fire in (what is common to all text, "news" in every headline, cancels).
- **concept label**: the vocabulary entry that best *separates* its activating contexts from
  background ones (AUC of cosine similarity), shortlisted by cosine to the direction. Contexts
  are split in two by activation rank: the even ranks choose the label, the odd ranks (and a
  disjoint half of the background) score it - the **quality** is that held-out AUC.
- **lexical label**: the token it fires on (``token "for" after "waiting"``), scored the same way
  as a detector "the context contains that token". A latent is ``lexical`` when one token takes at
  least half of its firings (qualified by its concept when that separates well: ``token "-"
  (code)``) or when no concept reaches AUC 0.70; otherwise ``concept``.
- **promoted tokens**: the reader's own unembedding applied to the latent's decoder direction
  (logit lens): free, offline evidence of what the latent writes, kept in the description.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

import numpy as np
import torch

from indexer.labels.dictionary.vocabulary import Concept

MIN_CONTEXTS = 4
SHORTLIST = 48
CONCEPT_MIN_AUC = 0.70
ALSO_CONCEPT_AUC = 0.80  # a lexical label names the concept too from this held-out AUC
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+")


def label_all(state, row_of: dict[int, int], ctx: np.ndarray, bg: np.ndarray, vocab: list[Concept], con: np.ndarray,
              indexer, emb, progress: bool = True) -> dict:
    d_sae = state.d_sae
    tok = indexer.reader.tokenizer
    eligible = [l for l in range(d_sae) if int((state.best_ctx[l] >= 0).sum()) >= MIN_CONTEXTS]
    promoted = dict(zip(eligible, promoted_tokens(indexer, eligible, top=8)))
    # background split: even rows choose, odd rows score; per latent, drop rows it fires in
    n_bg = len(state.background)
    fires_in_bg = [set() for _ in range(d_sae)]
    for r, (_, lats) in enumerate(state.background):
        for l in lats.tolist():
            fires_in_bg[l].add(r)
    bg_choose_all = np.arange(0, n_bg, 2)
    bg_score_all = np.arange(1, n_bg, 2)
    bg_text_lower = [w.lower() for w, _ in state.background]
    bg_mean = bg.mean(axis=0)
    directions = np.zeros((d_sae, ctx.shape[1]), np.float32)
    latents: dict[int, dict] = {}
    vec_texts: dict[int, str] = {}  # what the label vector embeds: the concept's text, or the token (+ concept)
    for l in eligible:
        ids = [int(c) for c in state.best_ctx[l] if c >= 0]
        rows = np.asarray([row_of[c] for c in ids])
        fb = fires_in_bg[l]
        bg_c = np.asarray([r for r in bg_choose_all if r not in fb], dtype=np.int64) if fb else bg_choose_all
        bg_s = np.asarray([r for r in bg_score_all if r not in fb], dtype=np.int64) if fb else bg_score_all
        if len(bg_c) == 0 or len(bg_s) == 0:  # fires in (nearly) every context: no contrast to draw
            bg_c, bg_s = bg_choose_all, bg_score_all
        d = ctx[rows].mean(axis=0) - (bg[np.concatenate([bg_c, bg_s])].mean(axis=0) if fb else bg_mean)
        directions[l] = d / max(float(np.linalg.norm(d)), 1e-8) if np.isfinite(d).all() else 0.0
        choose, score = rows[0::2], rows[1::2]
        d_choose = ctx[choose].mean(axis=0) - bg[bg_c].mean(axis=0)
        short = np.argsort(-(con @ d_choose))[:SHORTLIST]
        auc_choose = auc_rows(ctx[choose] @ con[short].T, bg[bg_c] @ con[short].T)
        best = int(short[int(np.argmax(auc_choose))])
        concept_q = float(auc_rows(ctx[score] @ con[best][:, None], bg[bg_s] @ con[best][:, None])[0])
        # token evidence
        texts = [state.contexts[c] for c in ids]
        fired = Counter(tok.decode([t]).strip().lower() or "␣" for (_, _, _, t) in texts)
        ranked_toks = sorted(fired.items(), key=lambda kv: (-kv[1], kv[0]))
        top_tok, top_n = ranked_toks[0]
        one_token = top_n / len(ids) >= 0.5
        # a latent without one dominant token is detected by its few most common ones
        tokens = [top_tok] if one_token else [t for t, _ in ranked_toks[:3]]
        before = Counter(_prev_word(w, s) for (w, s, _, _) in texts)
        prev, prev_n = sorted(before.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        lex_q = _lexical_quality(tokens, [texts[k][0].lower() for k in range(1, len(texts), 2)], [bg_text_lower[r] for r in bg_s])
        concept = vocab[best]
        # a WordNet "concept" that is the firing word itself ("freely" for "free") names no concept
        echo = concept.source == "wordnet" and _same_stem(concept.name, top_tok)
        # One dominant firing token makes a latent lexical, whatever the contexts have in common: on
        # a first build, latents firing on "-" in code or on "q" near "Pittsburgh" were named "code"
        # and "Pittsburgh", and fired on "-" and "Q" in news text. The concept, when it separates
        # well, qualifies the token instead: 'token "-" (code)'.
        lexical = one_token or concept_q < CONCEPT_MIN_AUC
        if lexical:
            after = f' after "{prev}"' if one_token and prev and prev_n / len(ids) >= 0.5 else ""
            # a lexical latent whose token also belongs to a concept says so: 'token "socks" (clothing)'
            # not the token's own WordNet entry ("freely" for "free"): that adds nothing
            also = concept_q >= ALSO_CONCEPT_AUC and not echo
            shown = f'token "{top_tok}"{after}' if one_token else "tokens " + " / ".join(f'"{t}"' for t in tokens)
            label = shown + (f" ({concept.name})" if also else "")
            vec_text = " / ".join(f'"{t}"' for t in tokens) + after + (f"; {concept.text}" if also else "")
            quality = max(lex_q, concept_q) if also else lex_q
        else:
            label, vec_text, quality = concept.name, concept.text, concept_q
        evidence = ", ".join(f"'{t}'" for t, _ in sorted(fired.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
        desc = (f"{'Concept: ' + vocab[best].text + '. ' if not lexical else ''}"
                f"Fires on {evidence} (top token in {top_n}/{len(ids)} contexts). "
                f"Best concept {vocab[best].name!r} (held-out AUC {concept_q:.2f}); token detector AUC {lex_q:.2f}. "
                f"Promotes: {', '.join(repr(p) for p in promoted[l])}.")
        vec_texts[l] = vec_text
        latents[l] = {"label": label, "kind": "lexical" if lexical else "concept", "quality": round(float(quality), 3),
                      "concept": vocab[best].name, "concept_auc": round(concept_q, 3), "token": top_tok,
                      "token_auc": round(float(lex_q), 3), "description": desc, "promotes": promoted[l],
                      "fired_docs": int(state.fired_docs[l])}
        if progress and len(latents) % 2000 == 0:
            print(f"labelled {len(latents):,} of {len(eligible):,} latents", file=sys.stderr, flush=True)
    labels_text = [vec_texts[l] for l in sorted(latents)]
    label_vecs = np.zeros_like(directions)
    if labels_text:
        label_vecs[sorted(latents)] = emb.encode(labels_text, batch_size=256)
    return {"latents": latents, "directions": directions, "label_vecs": label_vecs}


def auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC per column: P(score of a positive > score of a negative), ties half."""
    if len(pos) == 0 or len(neg) == 0:
        return np.full(pos.shape[1], 0.5)
    neg_sorted = np.sort(neg, axis=0)
    out = np.empty(pos.shape[1])
    for j in range(pos.shape[1]):
        lo = np.searchsorted(neg_sorted[:, j], pos[:, j], side="left")
        hi = np.searchsorted(neg_sorted[:, j], pos[:, j], side="right")
        out[j] = float(np.mean((lo + hi) / 2.0)) / len(neg)
    return out


def _same_stem(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return len(a) >= 3 and len(b) >= 3 and a[:4] == b[:4]


def _prev_word(window: str, start: int) -> str:
    words = _WORD.findall(window[:start])
    return words[-1].lower() if words else ""


def _lexical_quality(tokens: list[str], act_lower: list[str], bg_lower: list[str]) -> float:
    """AUC of the detector "the context contains one of ``tokens``": 0.5 * (1 + TPR - FPR)."""
    tokens = [t for t in tokens if t != "␣"]
    if not act_lower or not bg_lower or not tokens:
        return 0.5
    pats = [re.compile(r"(?<![a-z0-9])" + re.escape(t) + r"(?![a-z0-9])") if re.match(r"^[a-z0-9]", t) else None for t in tokens]

    def hit(s: str) -> bool:
        return any((p.search(s) if p else t in s) for p, t in zip(pats, tokens))

    tpr = sum(map(hit, act_lower)) / len(act_lower)
    fpr = sum(map(hit, bg_lower)) / len(bg_lower)
    return 0.5 * (1 + tpr - fpr)


def promoted_tokens(indexer, latents: list[int], top: int = 8, block: int = 512) -> list[list[str]]:
    """Logit lens on decoder directions: the output tokens each raises most (the reader's unembedding)."""
    W_U = indexer.reader.model.get_input_embeddings().weight.detach()
    W_dec = indexer.sae.W_dec.detach()[latents].to(W_U.dtype)
    tok = indexer.reader.tokenizer
    out: list[list[str]] = []
    with torch.inference_mode():
        for s in range(0, W_dec.shape[0], block):
            logits = W_dec[s : s + block] @ W_U.T
            idx = logits.float().topk(top, dim=-1).indices.cpu().numpy()
            out.extend([[tok.decode([int(t)]).strip() for t in row] for row in idx])
    return out
