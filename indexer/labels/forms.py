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
