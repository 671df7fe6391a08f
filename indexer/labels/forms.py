"""Surface forms of a firing token: what a latent's examples share when no one token does.

Most latents of a small reader's SAE are lexical, and many of those that fire on *different*
tokens still share one thing a reader sees at once: the token is the first piece of a name the
tokenizer split ("[Quir]ksville", "[Pre]ttejohn"), the end piece of one ("Kipl[agat]",
"Mill[an]"), an initial, a digit inside a number. Listing the tokens (`"quir" / "pre" / "ch"`)
hides that; naming the form shows it. Forms are read from the text around the token's character
span, so they need no tokenizer: "split" means the word goes on past the token (or began before it).

Only the specific forms are used as labels. Broad ones (any capitalised word, any number, any
punctuation) hold for a large share of all tokens and would name nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Form:
    key: str
    label: str  # short phrase; examples are appended where the label is built
    short: str  # a qualifier after a token label: 'token "mor" (name start)'


# Most specific first: where two forms hold equally often, the earlier one names the latent.
FORMS: tuple[Form, ...] = (
    Form("initial", "a name's initial", "initial"),
    Form("name_start", "first piece of a name split into tokens", "name start"),
    Form("name_end", "later piece of a name split into tokens", "inside a name"),
    Form("number_piece", "digits inside a longer number", "inside a number"),
    Form("word_start", "first piece of a word split into tokens", "word start"),
    Form("word_end", "later piece of a word split into tokens", "inside a word"),
    # groups: what two of the above share
    Form("name_piece", "piece of a name split into tokens", "name piece"),
    Form("word_piece", "piece of a word split into tokens", "word piece"),
)
_BY_KEY = {f.key: f for f in FORMS}


def _word_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    a, b = start, end
    while a > 0 and text[a - 1].isalnum():  # an apostrophe ends a word: "It's" is "It" + "'s"
        a -= 1
    while b < len(text) and text[b].isalnum():
        b += 1
    return a, b


def _token_bounds(text: str, span: tuple[int, int] | list[int]) -> tuple[int, int]:
    s, e = int(span[0]), int(span[1])
    while s < e and text[s].isspace():  # tokens carry their leading space: " proxy"
        s += 1
    return s, e


def forms_of(text: str, span: tuple[int, int] | list[int]) -> set[str]:
    """The forms the token at ``text[span]`` has (empty for a whole ordinary word)."""
    s, e = _token_bounds(text, span)
    core = text[s:e]
    if not core or not any(ch.isalnum() for ch in core):
        return set()
    a, b = _word_bounds(text, s, e)
    word = text[a:b]
    starts, ends = a == s or not core[0].isalnum(), b == e  # "'s", "-A": punctuation starts a word
    if starts and ends:  # a whole word
        nxt = text[e : e + 2]
        if len(core) == 1 and core.isupper() and core not in "AI" and (nxt[:1] == "." or (nxt[:1] == " " and nxt[1:].isupper())):
            return {"initial", "name_piece"}
        return set()
    if word.replace(",", "").isdigit():
        return {"number_piece", "word_piece"}
    out: set[str] = set()
    name = word[:1].isupper()
    if starts:
        out.add("name_start" if name else "word_start")
    else:
        out.add("name_end" if name else "word_end")
    out.add("name_piece" if name else "word_piece")
    if name:
        out.add("word_piece")  # a name piece is a word piece too
    return out


# A form is judged on a latent's strongest examples, those users read first (the page and
# `saedex latent` lead with them). Latents of the shipped SAE are polysemantic below their peak:
# one fires on "[Quir]ksville", "Mike [Pre]ttejohn", "[Met]life", "[Pre]bon" at its strongest
# and on "over", "in", "means" far weaker; its top-20 share no form, its top six do.
STRONGEST = 6


def shared_form(examples: list[tuple[str, list[int], float]], min_share: float = 0.7) -> tuple[Form, float] | None:
    """The most specific form held by at least ``min_share`` of the (weighted) strongest examples.

    ``examples``: (text, span, weight), strongest first. Returns the form and its share, or None.
    """
    examples = examples[:STRONGEST]
    total = sum(w for _, _, w in examples)
    if total <= 0:
        return None
    share: dict[str, float] = {}
    for text, span, w in examples:
        for k in forms_of(text, span):
            share[k] = share.get(k, 0.0) + w / total
    for f in FORMS:
        if share.get(f.key, 0.0) >= min_share:
            return f, share[f.key]
    return None


def form_label(form: Form, examples: list[tuple[str, list[int], float]], show: int = 2) -> str:
    """``first piece of a name split into tokens: [Quir]ksville, [Pre]ttejohn``."""
    shown: list[str] = []
    for text, span, _ in examples:
        if form.key not in forms_of(text, span):
            continue
        s, e = _token_bounds(text, span)
        a, b = _word_bounds(text, s, e)
        if b - a > 24:
            continue
        w = f"{text[a:s]}[{text[s:e]}]{text[e:b]}"
        if w not in shown:
            shown.append(w)
        if len(shown) == show:
            break
    return form.label + (": " + ", ".join(shown) if shown else "")


# The concept family reads whole sentences, yet its embedder reads a rare name through WordPiece
# pieces, and a short sentence's vector leans on a name's first piece: on the demo index concept
# latents gather "[Cr]agg", "[Cr]am", "[Cr]uyff" or "[Gi]eve", "[Gi]dley", "[Gi]zmondo", and the
# closest meaning a vocabulary offers ("crc", "economy") names none of it. A latent's units share
# such a piece when at least WORD_START_SHARE of its choosing units hold a word beginning with it,
# the piece is WORD_START_ENRICHMENT times as common there as in background units, and no one
# word carries it in WORD_START_MAX_WORD of all its units (then the word itself names the latent).
WORD_START_SHARE = 0.5
WORD_START_ENRICHMENT = 3.0
WORD_START_MAX_WORD = 0.4
WORD_START_MIN_WORDS = 3  # distinct words carrying the piece
WORD_START_STEM = 4  # a start this long is a stem
_UNIT_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]")


@dataclass(frozen=True)
class PieceForm:
    """What a concept latent's units share when it is a word's first piece (see above)."""

    piece: str
    label: str  # 'first piece of a name split into tokens: [Cr]agg, [Cr]am, [Cr]uyff'
    quality: float  # detection AUC on the scoring units vs the background: (hit rate + 1 - background rate) / 2
    share: float  # of the choosing units
    background: float  # share of background units holding it


def _pieces_of(unit: str, first_piece: Callable[[str], str | None]) -> dict[str, list[str]]:
    """word start -> the words of ``unit`` (as written, possessive dropped) that begin with it. A
    word's starts are its first piece and that piece's shorter prefixes: the embedder keeps
    "[Q]west", "[Qu]aid" and "[Quan]gos" apart, but a latent can gather all three by their "Q"."""
    out: dict[str, list[str]] = {}
    for w in _UNIT_WORD.findall(unit):
        w = w[:-2] if w.lower().endswith("'s") else w
        p = first_piece(w) if len(w) > 1 else None
        for n in range(1, len(p) + 1 if p else 0):
            out.setdefault(p[:n], []).append(w)
    return out


def background_pieces(units: list[str], first_piece: Callable[[str], str | None]) -> list[set[str]]:
    """Each background unit's word starts, read once for every latent :func:`shared_first_piece` judges."""
    return [set(_pieces_of(u, first_piece)) for u in units]


def shared_first_piece(units: list[str], background: list[set[str]], first_piece: Callable[[str], str | None]) -> PieceForm | None:
    """The word start a concept latent's units share (strongest units first: even ranks choose,
    odd ranks score, as the concept labels are chosen), or None.

    ``background``: :func:`background_pieces` of units the latent does not single out;
    ``first_piece(word)``: the embedder tokenizer's first piece of ``word`` (lower case) where the
    word splits into several pieces, else None."""
    if len(units) < 4 or not background:
        return None
    per_unit = [_pieces_of(u, first_piece) for u in units]
    choose, score = per_unit[0::2], per_unit[1::2]
    counts = Counter(p for u in choose for p in u)
    for piece, c in sorted(counts.items(), key=lambda pc: (-len(pc[0]), -pc[1], pc[0])):  # the most specific start that holds
        share = c / len(choose)
        if share < WORD_START_SHARE:
            continue
        words = Counter(w.lower() for u in per_unit for w in set(u.get(piece, ())))
        if len(words) < WORD_START_MIN_WORDS or words.most_common(1)[0][1] >= WORD_START_MAX_WORD * len(units):
            continue
        bg = sum(piece in u for u in background) / len(background)
        if share < WORD_START_ENRICHMENT * max(bg, 1 / len(background)):
            continue
        hit = sum(piece in u for u in score) / max(len(score), 1)
        if hit < WORD_START_SHARE:  # the scoring units must show it too
            continue
        written = [w for u in per_unit for w in u.get(piece, ())]
        name = sum(w[:1].isupper() for w in written) * 2 >= len(written)
        if len(piece) >= WORD_START_STEM:  # "[forecast]s", "[forecast]ing", "[Spider]-Man", "[Half]-Life": a stem,
            return None  # which its meaning names (and so does any shorter start of it)
        if not name and len(piece) == 1:  # "[i]mplicating", "[i]nteracted": one lower-case letter starts too many words
            continue
        form = _BY_KEY["name_start" if name else "word_start"]
        shown, seen = [], set()
        for w, _ in Counter(written).most_common():
            if w.lower() not in seen and len(w) <= 24:
                seen.add(w.lower())
                shown.append(f"[{w[:len(piece)]}]{w[len(piece):]}")
            if len(shown) == 3:
                break
        return PieceForm(piece, f"{form.label}: " + ", ".join(shown), round(0.5 * (hit + 1 - bg), 3), round(share, 3), round(bg, 3))
    return None
