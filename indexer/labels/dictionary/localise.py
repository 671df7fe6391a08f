"""How a dictionary label reads in one index: kept, qualified, or given way to the index's own.

The dictionary is built once on the SAE's training corpus; an index is another corpus, where the
same latent may fire on other tokens. Each check here looks at the index's own top examples.
"""

from __future__ import annotations

import re

import numpy as np

from indexer.labels.forms import shared_form
from indexer.labels.offline import rank_weight
from indexer.labels.quality import embedding_qualities, windows_from_payloads
from indexer.labels.windows import WindowCache, example_windows, window_vectors

N_CONCEPT_CHECK = 10  # top examples that check a dictionary concept label against this index
# A dictionary concept label stays where its embedding ranks windows around this index's own top
# examples above background windows more often than not (AUC >= 0.5); below, it names something
# else than what the latent fires on here. Dev queries (SAE MAP; 0.371 with no check): 0.5 -> 0.372,
# 0.6 -> 0.366, 0.7 (the dictionary's own bar) -> 0.357: dense latents fire noisily at their top
# yet their concept ("programming") still carries the query - their label stays, scored below.
CONCEPT_HERE_MIN_AUC = 0.5

def concept_qualities_here(candidates: dict[int, list[dict]], dictionary, background_payloads: list[dict], emb,
                            progress: bool, window_cache: WindowCache) -> dict[int, float]:
    """How well each dictionary *concept* label detects its latent in this index: the AUC of
    the label's embedding against windows around the index's own top examples (none of which chose
    the label: it was chosen on the SAE's training corpus) versus background windows of documents
    the latent is absent from (:func:`indexer.labels.quality.embedding_qualities`)."""
    if not candidates:
        return {}
    per_latent = {l: example_windows(ex, N_CONCEPT_CHECK) for l, ex in candidates.items()}
    vecs = window_vectors({k: t for ws in per_latent.values() for k, t in ws}, emb, progress, window_cache)
    items = [(l, np.nan_to_num(dictionary.label_vecs[l].astype(np.float32)), [vecs[k] for k, _ in ws]) for l, ws in per_latent.items()]
    return embedding_qualities(items, windows_from_payloads(background_payloads), emb)


AGREEMENT = 0.5


def dictionary_agrees(entry: dict, examples: list[dict]) -> bool:
    """Does a lexical dictionary label describe this index's own top examples?

    The dictionary is built on the SAE's training corpus; many latents of the shipped SAE are
    lexical and fire on other tokens in another corpus (on 999 BBC articles, the dictionary's
    token was the firing token in at least half of the top examples for only 47% of lexical
    latents). Where it is not, the index's own token-and-context label is the true one. Concept
    labels were chosen on meaning and stay, unless this index's strongest examples share one
    surface form (on the demo index, ``loan`` fired on "[Quir]ksville" and "Mike [Pre]ttejohn":
    pieces of split names, not loans); so does a list of tokens (``tokens "pick" / "ch" / "--"``),
    which names no one thing either.
    """
    shown = [ex for ex in examples if ex.get("span")]
    lexical = entry.get("kind") == "lexical"
    names_one_token = lexical and not entry.get("label", "").startswith("tokens ")
    if not names_one_token and _form_of(shown) is not None:
        return False
    if not lexical:
        return True
    toks = [ex["text"][ex["span"][0]:ex["span"][1]].strip().lower() for ex in shown]
    if not toks:
        return True
    wanted = {entry.get("token", "")} | set(re.findall(r'"([^"]+)"', entry.get("label", "").split(" after ")[0]))
    return sum(t in wanted for t in toks) / len(toks) >= AGREEMENT


def _form_of(shown: list[dict]):
    """The surface form this index's strongest examples share, if any (see :mod:`indexer.labels.forms`)."""
    return shared_form([(ex["text"], ex["span"], rank_weight(i)) for i, ex in enumerate(shown)])


_LEXICAL_LABEL = re.compile(r'^(?P<head>tokens? .+?)(?P<after> after "(?P<prev>[^"]+)")?(?: \((?P<qual>[^()]+)\))?$')


def localise_label(entry: dict, examples: list[dict]) -> tuple[str, str]:
    """A lexical dictionary label as this index's examples bear it out.

    The dictionary qualifies a token label by what its contexts shared in the SAE's training
    corpus - the word before it (``after "haskell"``) or a concept (``(Pittsburgh)``). In another
    corpus the same token fires elsewhere: on 999 BBC articles ``token "-" after "haskell" (code)``
    fired on "Bankash-A" and ``token "q" (Pittsburgh)`` on "Qwest". A qualifier stays only where
    at least half of this index's top examples show it (the word before the firing token; the
    concept's word within 200 characters); the token itself was already checked
    (:func:`dictionary_agrees`). A token left bare is qualified by the surface form its strongest
    examples share here, if any (``token "q" (name start)`` on "[Q]west" and "[Q]antas")."""
    label, description = entry["label"], entry["description"]
    m = _LEXICAL_LABEL.match(label) if entry.get("kind") == "lexical" else None
    shown = [ex for ex in examples if ex.get("span")]
    if m is None or not shown:
        return label, description

    def share(test) -> float:
        return sum(bool(test(ex)) for ex in shown) / len(shown)

    keep = m.group("head")
    dropped = []
    if m.group("after"):
        prev = m.group("prev").lower()
        if share(lambda ex: (ex["text"][: ex["span"][0]].split() or [""])[-1].lower().strip(".,;:!?\"'()") == prev) >= AGREEMENT:
            keep += m.group("after")
        else:
            dropped.append(m.group("after").strip())
    if m.group("qual"):
        qual = m.group("qual")
        words = [w for w in re.findall(r"[a-z]+", qual.lower()) if len(w) > 2]

        def near(ex) -> bool:
            s, e = ex["span"]
            window = ex["text"][max(0, s - 200): e + 200].lower()
            return any(w in window for w in words)

        if words and share(near) >= AGREEMENT:
            keep += f" ({qual})"
        else:
            dropped.append(f"({qual})")
    if dropped:
        description += f" Training-corpus qualifier not seen in this index, dropped: {' '.join(dropped)}."
    form = _form_of(shown) if keep == m.group("head") else None
    if form:  # a bare token whose strongest examples here share a form: 'token "q" (name start)'
        keep += f" ({form[0].short})"
        description += f" Here: {form[0].label}."
    return keep, description
