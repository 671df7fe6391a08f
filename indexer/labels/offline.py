"""Offline latent labeller: short labels from activating contexts, no LLM.

None of the small local models can write labels (they echo the examples), so the default
labeller reads the evidence directly:
- the *firing tokens* (the token where the latent peaks in each top document), and
- the words *around* them,
each scored against background word frequencies of the corpus (tf x idf), so that ubiquitous
words ("the", "and") only win when they really are the whole story. A latent firing on the same
token everywhere is labelled by that token; a latent firing on many different tokens is labelled
by the distinctive context vocabulary it shares, or - where its examples share no token but one
surface form, such as the first piece of a name the tokenizer split - by that form
(:mod:`indexer.labels.forms`).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from indexer.encode.pooling import unpack
from indexer.labels.forms import form_label, shared_form
from indexer.labels.quality import Background, Detector, DocumentWindows, held_out_quality, token_text

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]+|\d+|[^\sA-Za-z\d]")
_STOP = set("""a an the and or but if of to in on at by for with from as is are was were be been being it its this that
these those i you he she we they me him her us them my your his our their not no do does did so than then there here
""".split())


# 2: examples weighted by rank. Labels counted every top example alike, so a latent whose
# strongest examples fire on "Mart" was labelled by tokens of weaker ones ("morgan", "mortgage")
# and the examples users see as its evidence did not show its label.
# 3: surface forms. A latent firing on "[Quir]ksville", "[Pre]ttejohn", "[Ch]idambaram" was
# labelled '"quir" / "pre" / "ch"'; what its examples share is that each is the first piece of a
# name split into tokens, and the label now says so.
# 4: a held-out quality score (indexer.labels.quality) instead of none, and duplicate examples
# (the same passage in two documents) shown once.
# 5: a label that replaces the dictionary's says why in its description.
LABELLER_VERSION = 5


def rank_weight(i: int) -> float:
    """Weight of the i-th strongest example (1, 0.67, 0.5, 0.4, ...)."""
    return 1.0 / (1.0 + i / 2.0)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class OfflineLabeller:
    """Labels a latent by the tokens it fires on and the words around them in this index's own examples."""

    name = "offline"

    @staticmethod
    def keeps(payload: dict, dictionary_has_it: bool) -> bool:
        """A stored offline label stays while its examples do, unless the dictionary now names the
        latent or the labeller changed since (LABELLER_VERSION)."""
        return not dictionary_has_it and payload.get("label_version") == LABELLER_VERSION

    def held_out_qualities(self, to_label: list[tuple[int, list[dict]]], example_rows: dict[int, list[int]],
                           payloads: dict[int, dict], background_payloads: list[dict]) -> dict[int, float]:
        """Held-out quality of each offline label (:mod:`indexer.labels.quality`): the label is chosen
        again from the even-ranked examples and its detector scored on the odd-ranked ones against
        background windows the latent does not fire in."""
        if not to_label:
            return {}
        background = Background(background_payloads)
        documents: dict[int, DocumentWindows] = {}
        out: dict[int, float] = {}
        for latent, examples in to_label:
            shown = [(ex, r) for ex, r in zip(examples, example_rows.get(latent, [])) if ex.get("span") and ex.get("doc_span")]
            if len(shown) < 4:  # two to choose, two to score: fewer says nothing
                continue
            detector = Detector.from_dict(self.label([ex for ex, _ in shown[0::2]]).get("detector"))
            held_out = []
            for ex, r in shown[1::2]:
                if r not in documents:
                    p = payloads[r]
                    documents[r] = DocumentWindows(p["text"], unpack(p["_offsets"], 2) if p.get("_offsets") else np.zeros((0, 2), np.int32))
                held_out.append(documents[r].keys(tuple(ex["doc_span"])))
            q = held_out_quality(detector, held_out, background, latent)
            if q is not None:
                out[latent] = q
        return out

    def __init__(self, background_texts: list[str]):
        self.n_bg = max(len(background_texts), 1)
        df: Counter = Counter()
        for t in background_texts:
            df.update(set(_words(t)))
        self.df = df

    def idf(self, w: str) -> float:
        return math.log((self.n_bg + 1) / (self.df.get(w, 0) + 1)) + 1.0

    def label(self, examples: list[dict]) -> dict:
        fired: Counter = Counter()  # rank-weighted: the strongest examples speak loudest
        context: Counter = Counter()
        seen: Counter = Counter()  # plain counts, for "shared by at least two examples"
        n = 0
        total = 0.0
        spans: list[tuple[str, list[int], float]] = []
        for ex in examples:
            span = ex.get("span")
            if not span:
                continue
            w = rank_weight(n)
            n += 1
            total += w
            text = ex["text"]
            spans.append((text, span, w))
            fired[token_text(text, span)] += w
            left = _words(text[: span[0]])[-4:]
            right = _words(text[span[1] :])[:4]
            for word in set(left + right):
                context[word] += w
                seen[word] += 1
        if n == 0:
            return {"label": "(no examples)", "description": "", "source": "offline"}
        # Firing tokens: share of examples, lightly weighted by distinctiveness.
        tok_scores = {t: c / total * (0.5 + 0.5 * min(self.idf(t) / 4.0, 1.0)) for t, c in fired.items()}
        # Ties broken by the string itself: labels must not depend on set/hash order between runs.
        top_tok = sorted(tok_scores, key=lambda t: (-tok_scores[t], t))
        ctx_scores = {w: (c / total) * self.idf(w) for w, c in context.items() if seen[w] >= 2 and w not in _STOP and len(w) > 1}
        top_ctx = [w for w in sorted(ctx_scores, key=lambda w: (-ctx_scores[w], w)) if w not in top_tok[:3]][:3]
        share = fired[top_tok[0]] / total
        form = shared_form(spans)
        if share >= 0.5:  # one token: it names the latent; a shared form qualifies it
            label = f'"{top_tok[0]}"' + (f" ({form[0].short})" if form else f" ({', '.join(top_ctx[:2])})" if top_ctx else "")
            detector = Detector(tokens=(top_tok[0],)).as_dict()
        elif form:  # different tokens, one form: the form names it, with two of its words
            label = form_label(form[0], spans)
            detector = Detector(form=form[0].key).as_dict()
        else:
            label = " / ".join(f'"{t}"' for t in top_tok[:3]) + (f" ({', '.join(top_ctx[:2])})" if top_ctx else "")
            detector = Detector(tokens=tuple(top_tok[:3])).as_dict()
        ex = next((e for e in examples if e.get("span")), None)
        quote = ""
        if ex:
            s, e = ex["span"]
            t = ex["text"]
            quote = f' e.g. "…{t[max(0, s - 40):s]}[{t[s:e]}]{t[e:e + 40]}…"'
        desc = (
            f"Fires on {', '.join(repr(t) for t in top_tok[:5])} "
            f"(top token, rank-weighted, in {share:.0%} of {n} examples)"
            + (f"; {form[0].label} in {form[1]:.0%}" if form else "")
            + (f"; nearby words: {', '.join(top_ctx)}" if top_ctx else "")
            + "." + quote
        )
        return {"label": label, "description": desc.replace("\n", " "), "source": "offline", "version": LABELLER_VERSION,
                "detector": detector}

    def label_many(self, items: list[tuple[int, list[dict]]], progress: bool = False) -> dict[int, dict]:
        return {latent: self.label(examples) for latent, examples in items}
