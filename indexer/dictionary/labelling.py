"""Stage 4 of the dictionary build: what each latent does, named by discrimination, with a score.

For every latent with enough contexts:
- **direction**: mean MiniLM embedding of its activating contexts minus the mean of background
  contexts it does not fire in (what is common to all text, "news" in every headline, cancels).
- **concept label**: the vocabulary entry that best *separates* its activating contexts from
  background ones (AUC of cosine similarity), shortlisted by cosine to the direction. Contexts
  are split in two by activation rank: the even ranks choose the label, the odd ranks (and a
  disjoint half of the background) score it - the **quality** is that held-out AUC.
- **lexical label**: the token it fires on (``token "for" after "waiting"``), scored the same way
  as a detector "the context contains that token". A latent is ``lexical`` when its firing token
  detects it at least as well as the best concept; otherwise ``concept``.
- **promoted tokens**: the reader's own unembedding applied to the latent's decoder direction
  (logit lens): free, offline evidence of what the latent writes, kept in the description.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

import numpy as np
import torch

from indexer.dictionary.vocabulary import Concept

MIN_CONTEXTS = 4
SHORTLIST = 48
CONCEPT_MIN_AUC = 0.70
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+")


def label_all(state, row_of: dict[int, int], ctx: np.ndarray, bg: np.ndarray, vocab: list[Concept], con: np.ndarray,
              indexer, emb, progress: bool = True) -> dict:
    d_sae = state.d_sae
    tok = indexer.reader.tokenizer
    promoted = promoted_tokens(indexer, top=8)
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
    for l in range(d_sae):
        ids = [int(c) for c in state.best_ctx[l] if c >= 0]
        if len(ids) < MIN_CONTEXTS:
            continue
        rows = np.asarray([row_of[c] for c in ids])
        fb = fires_in_bg[l]
        bg_c = np.asarray([r for r in bg_choose_all if r not in fb], dtype=np.int64) if fb else bg_choose_all
        bg_s = np.asarray([r for r in bg_score_all if r not in fb], dtype=np.int64) if fb else bg_score_all
        d = ctx[rows].mean(axis=0) - (bg[np.concatenate([bg_c, bg_s])].mean(axis=0) if fb else bg_mean)
        directions[l] = d / max(float(np.linalg.norm(d)), 1e-8)
        choose, score = rows[0::2], rows[1::2]
        d_choose = ctx[choose].mean(axis=0) - bg[bg_c].mean(axis=0)
        short = np.argsort(-(con @ d_choose))[:SHORTLIST]
        auc_choose = auc_rows(ctx[choose] @ con[short].T, bg[bg_c] @ con[short].T)
        best = int(short[int(np.argmax(auc_choose))])
        concept_q = float(auc_rows(ctx[score] @ con[best][:, None], bg[bg_s] @ con[best][:, None])[0])
        # token evidence
        texts = [state.contexts[c] for c in ids]
        fired = Counter(tok.decode([t]).strip().lower() or "␣" for (_, _, _, t) in texts)
        top_tok, top_n = sorted(fired.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        before = Counter(_prev_word(w, s) for (w, s, _, _) in texts)
        prev, prev_n = sorted(before.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        lex_q = _lexical_quality(top_tok, [texts[k][0].lower() for k in range(1, len(texts), 2)], [bg_text_lower[r] for r in bg_s])
        lexical = (top_n / len(ids) >= 0.5 and lex_q >= concept_q) or concept_q < CONCEPT_MIN_AUC
        if lexical:
            label = f'token "{top_tok}"' + (f' after "{prev}"' if prev and prev_n / len(ids) >= 0.5 else "")
            quality = lex_q if top_n / len(ids) >= 0.5 else min(lex_q, concept_q)
        else:
            label, quality = vocab[best].name, concept_q
        evidence = ", ".join(f"'{t}'" for t, _ in sorted(fired.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
        desc = (f"{'Concept: ' + vocab[best].text + '. ' if not lexical else ''}"
                f"Fires on {evidence} (top token in {top_n}/{len(ids)} contexts). "
                f"Best concept {vocab[best].name!r} (held-out AUC {concept_q:.2f}); token detector AUC {lex_q:.2f}. "
                f"Promotes: {', '.join(repr(p) for p in promoted[l])}.")
        latents[l] = {"label": label, "kind": "lexical" if lexical else "concept", "quality": round(float(quality), 3),
                      "concept": vocab[best].name, "concept_auc": round(concept_q, 3), "token": top_tok,
                      "token_auc": round(float(lex_q), 3), "description": desc, "promotes": promoted[l],
                      "fired_docs": int(state.fired_docs[l]), "example": texts[0][0][:240]}
        if progress and l % 2000 == 0:
            print(f"labelled up to latent {l:,}", file=sys.stderr, flush=True)
    labels_text = [latents[l]["label"] if latents[l]["kind"] == "lexical" else vocab_text(vocab, latents[l]["concept"])
                   for l in sorted(latents)]
    label_vecs = np.zeros_like(directions)
    if labels_text:
        label_vecs[sorted(latents)] = emb.encode(labels_text, batch_size=256)
    return {"latents": latents, "directions": directions, "label_vecs": label_vecs}


def vocab_text(vocab: list[Concept], name: str) -> str:
    for c in vocab:
        if c.name == name:
            return c.text
    return name


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


def _prev_word(window: str, start: int) -> str:
    words = _WORD.findall(window[:start])
    return words[-1].lower() if words else ""


def _lexical_quality(token: str, act_lower: list[str], bg_lower: list[str]) -> float:
    """AUC of the detector "the context contains ``token``": 0.5 * (1 + TPR - FPR)."""
    if not act_lower or not bg_lower or token == "␣":
        return 0.5
    pat = re.compile(r"(?<![a-z0-9])" + re.escape(token) + r"(?![a-z0-9])") if re.match(r"^[a-z0-9]", token) else None
    hit = (lambda s: bool(pat.search(s))) if pat else (lambda s: token in s)
    tpr = sum(map(hit, act_lower)) / len(act_lower)
    fpr = sum(map(hit, bg_lower)) / len(bg_lower)
    return 0.5 * (1 + tpr - fpr)


def promoted_tokens(indexer, top: int = 8, block: int = 512) -> list[list[str]]:
    """Logit lens on each decoder direction: the output tokens it raises most (the reader's unembedding)."""
    W_U = indexer.reader.model.get_input_embeddings().weight.detach()
    W_dec = indexer.sae.W_dec.detach().to(W_U.dtype)
    tok = indexer.reader.tokenizer
    out: list[list[str]] = []
    with torch.inference_mode():
        for s in range(0, W_dec.shape[0], block):
            logits = W_dec[s : s + block] @ W_U.T
            idx = logits.float().topk(top, dim=-1).indices.cpu().numpy()
            out.extend([[tok.decode([int(t)]).strip() for t in row] for row in idx])
    return out
