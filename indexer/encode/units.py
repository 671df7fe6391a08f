"""A document's units for the concept family: its sentences, as character spans.

A sentence embedding summarises what a sentence says, so an SAE over sentence embeddings learns
concepts (a topic, a stance, a speech act) where the token SAE learns tokens. Splitting is by
rule - no model: a sentence ends at ``.``, ``!``, ``?`` or ``…`` (and closing quotes or brackets)
followed by white space, or at a line break. Fragments too short to mean anything alone (fewer
than ``MIN_WORDS`` words: "Mr.", a list bullet) join the next unit; a unit longer than
``MAX_CHARS`` is cut at a word boundary (a run-on line of a chat log, a table row). A document
with more than ``MAX_UNITS`` units keeps an even spread of them (a book-length text costs what a
long article costs).
"""

from __future__ import annotations

import re

MIN_WORDS = 4
MAX_CHARS = 400
MAX_UNITS = 256

_BOUNDARY = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|\n+")
_ABBREV = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Sr|Jr|vs|etc|e\.g|i\.e|No|Fig|Inc|Ltd|Co|U\.S|U\.K)\.|\b[A-Z]\.)$")


def _cut_long(text: str, start: int, end: int) -> list[tuple[int, int]]:
    out = []
    while end - start > MAX_CHARS:
        cut = text.rfind(" ", start, start + MAX_CHARS)
        cut = cut if cut > start + MAX_CHARS // 2 else start + MAX_CHARS
        out.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        out.append((start, end))
    return out


def split_units(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the sentences of ``text``, in order."""
    pieces, pos = [], 0
    for m in _BOUNDARY.finditer(text):
        pieces.append((pos, m.start() + len(m.group().rstrip()) if "\n" not in m.group() else m.start()))
        pos = m.end()
    pieces.append((pos, len(text)))
    spans: list[list[int]] = []
    pending: int | None = None  # start of an abbreviation-ended piece waiting for its sentence's end
    for start, end in pieces:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end <= start:
            continue
        if pending is not None:
            start, pending = pending, None
        if _ABBREV.search(text[start:end]):
            pending = start
        elif len(text[start:end].split()) < MIN_WORDS and spans:
            spans[-1][1] = end  # a short fragment ("Why?", "Hi!") belongs to the sentence before it
        else:
            spans.append([start, end])
    if pending is not None:
        spans.append([pending, len(text.rstrip())])
    out = [c for s_, e_ in spans for c in _cut_long(text, s_, e_)]
    if len(out) > MAX_UNITS:
        keep = sorted({round(i * (len(out) - 1) / (MAX_UNITS - 1)) for i in range(MAX_UNITS)})
        out = [out[i] for i in keep]
    return out


def units_of(text: str) -> list[str]:
    return [text[s:e] for s, e in split_units(text)]
