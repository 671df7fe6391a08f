"""How well a label detects its latent, on contexts that did not choose it: every label's score.

Dictionary labels carry a score from the SAE's training corpus. Two kinds of label are chosen
elsewhere and are scored here, the way the dictionary scores its own:

- **Offline labels** (a latent whose dictionary label this index's examples contradict is
  labelled from them: half of the demo index's latents, 70% of the dev index's; until this
  module they had no score, search treated them as middling, ``latents --json`` showed
  ``null``). The label is chosen again from the *even-ranked* examples only and reduced to a
  detector - the window around a token holds one of its tokens (``"steve"``), or a token of its
  surface form (``first piece of a name split into tokens``) - which is run on the *odd-ranked*
  examples (held out: positives) and on windows of the same width at a random token of
  background documents the latent does not fire in (negatives). Quality = AUC of that binary
  detector = (1 + TPR - FPR) / 2, in [0, 1]; 0.5 is chance. Windows are read from each
  document's stored token offsets, so no tokenizer is needed.
- **Free-text labels** (an LLM's, or a dictionary concept checked against this index) name no
  token: the AUC of the label embedding's cosine with windows around held-out firing tokens
  against background windows (:func:`embedding_qualities`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from indexer.encode.pooling import unpack
from indexer.labels.dictionary.labelling import auc_rows
from indexer.labels.forms import forms_of
from indexer.labels.windows import short_window

WINDOW = 90  # characters each side of the firing token, as the snippets users read (latent_stats.snippet)


@dataclass(frozen=True)
class Detector:
    """What a label claims a firing context contains: one of ``tokens``, or a token of ``form``."""

    tokens: tuple[str, ...] = ()
    form: str | None = None

    def as_dict(self) -> dict:
        """Plain JSON, as labeller outputs are: ``{"tokens": [...]}`` or ``{"form": key}``."""
        return {"form": self.form} if self.form else {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Detector | None":
        if not d:
            return None
        return cls(form=d["form"]) if d.get("form") else cls(tokens=tuple(d.get("tokens", ())))

    def keys(self) -> list[tuple[str, str]]:
        return [("form", self.form)] if self.form else [("tok", t) for t in self.tokens]


def token_text(text: str, span) -> str:
    """A token as labels name it: stripped, lower case, "␣" for whitespace."""
    return text[int(span[0]):int(span[1])].strip().lower() or "␣"


def token_keys(text: str, span) -> set[tuple[str, str]]:
    """The keys one token gives a window: the token itself and each surface form it has."""
    keys = {("tok", token_text(text, span))}
    keys.update(("form", f) for f in forms_of(text, span))
    return keys


class DocumentWindows:
    """Windows of one document, with each token's keys computed once: a document is the example
    of many latents (they fire on the same passages), and reading forms is the slow part."""

    def __init__(self, text: str, offsets: np.ndarray):
        self.text, self.offsets = text, offsets
        self._keys: list[set[tuple[str, str]] | None] = [None] * len(offsets)

    def keys(self, center: tuple[int, int], width: int = WINDOW) -> set[tuple[str, str]]:
        """Tokens and surface forms of every token within ``width`` characters of ``center``."""
        lo, hi = center[0] - width, center[1] + width
        a = int(np.searchsorted(self.offsets[:, 1], lo, side="right"))
        b = int(np.searchsorted(self.offsets[:, 0], hi, side="left"))
        out: set[tuple[str, str]] = set()
        for i in range(a, b):
            k = self._keys[i]
            if k is None:
                s, e = self.offsets[i].tolist()
                k = self._keys[i] = token_keys(self.text, (s, e)) if e > s else set()
            out |= k
        return out


def window_keys(text: str, offsets: np.ndarray, center: tuple[int, int], width: int = WINDOW) -> set[tuple[str, str]]:
    """Tokens and surface forms of every token within ``width`` characters of ``center``."""
    return DocumentWindows(text, offsets).keys(center, width)


def sampled_tokens(payloads: list[dict], seed: int = 0) -> Iterator[tuple[str, np.ndarray, tuple[int, int], np.ndarray]]:
    """(text, token offsets, span of one seeded random token, latents firing in the document) for
    each stored document that has text and tokens: where background windows are cut."""
    rng = np.random.default_rng(seed)
    for p in payloads:
        offs = unpack(p["_offsets"], 2) if p.get("_offsets") and p.get("text") else np.zeros((0, 2), np.int32)
        if len(offs) == 0:
            continue
        s, e = offs[int(rng.integers(0, len(offs)))].tolist()
        fires = unpack(p["_fires"], 2)[:, 0].astype(np.int64) if p.get("_fires") else np.zeros(0, np.int64)
        yield p["text"], offs, (int(s), int(e)), fires


class Background:
    """One window per background document at a seeded random token, indexed by what it contains,
    plus which latents fire in each document (a negative is a document the latent is absent from)."""

    def __init__(self, payloads: list[dict], seed: int = 0):
        self.n = 0
        rows_by_key: dict[tuple[str, str], list[int]] = {}
        fire_pairs: list[np.ndarray] = []
        for text, offs, span, fires in sampled_tokens(payloads, seed):
            for k in window_keys(text, offs, span):
                rows_by_key.setdefault(k, []).append(self.n)
            fire_pairs.append(np.stack([fires, np.full(len(fires), self.n, np.int64)], axis=1))
            self.n += 1
        self.rows_by_key = {k: np.asarray(v, np.int64) for k, v in rows_by_key.items()}
        pairs = np.concatenate(fire_pairs) if fire_pairs else np.zeros((0, 2), np.int64)
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        self._fire_lat, self._fire_row = pairs[:, 0], pairs[:, 1]

    def fires_in(self, latent: int) -> np.ndarray:
        a, b = np.searchsorted(self._fire_lat, [latent, latent + 1])
        return self._fire_row[a:b]

    def false_positive_rate(self, detector: Detector, latent: int) -> float | None:
        """Share of the latent's negative windows the detector fires on (all windows when the
        latent fires in every background document: no contrast left, as in the dictionary)."""
        if self.n == 0:
            return None
        hits = np.unique(np.concatenate([self.rows_by_key.get(k, np.zeros(0, np.int64)) for k in detector.keys()] or [np.zeros(0, np.int64)]))
        fires = self.fires_in(latent)
        n_neg = self.n - len(fires)
        if n_neg <= 0:
            return len(hits) / self.n
        return (len(hits) - int(np.isin(hits, fires).sum())) / n_neg


def held_out_quality(detector: Detector | None, held_out: list[set[tuple[str, str]]], background: Background, latent: int) -> float | None:
    """AUC of ``detector`` on held-out activating windows against the latent's negative windows."""
    if detector is None or not held_out or not detector.keys():
        return None
    fpr = background.false_positive_rate(detector, latent)
    if fpr is None:
        return None
    want = set(detector.keys())
    tpr = sum(bool(keys & want) for keys in held_out) / len(held_out)
    return round(0.5 * (1.0 + tpr - fpr), 3)


# ---------------------------------------------------------------- free-text labels
# A label an LLM wrote ("expressions of regret"), or a dictionary concept ("Hawaii"), names no
# token to look for: the cosine of its embedding with short windows around held-out firing tokens
# (the examples the LLM was not shown; for a concept, all of this index's) against windows at
# random tokens of documents the latent does not fire in; quality = that AUC.

BACKGROUND_DOCS = 300


def windows_from_payloads(payloads: list[dict], seed: int = 0) -> list[tuple[str, set[int]]]:
    """(a short window at a seeded random token, the latents firing in its document) per document."""
    return [(short_window(text, list(span)), set(fires.tolist())) for text, _, span, fires in sampled_tokens(payloads, seed)]


def background_windows(store, n: int = BACKGROUND_DOCS, seed: int = 0) -> list[tuple[str, set[int]]]:
    """:func:`windows_from_payloads` of ``n`` documents: the first pages of the index (point ids
    are hashes of document ids, so in no telling order)."""
    payloads: list[dict] = []
    for page in store.scroll_docs(with_sparse=False, payload_fields=["text", "_offsets", "_fires"], batch=min(n, 1000)):
        payloads.extend(h.payload for h in page)
        if len(payloads) >= n:
            break
    return windows_from_payloads(payloads[:n], seed)


def embedding_qualities(items: list[tuple[int, np.ndarray, list]], background: list[tuple[str, set[int]]], emb,
                        min_held_out: int = 4) -> dict[int, float]:
    """``items``: (latent, label vector, held-out firing windows: texts, or their unit vectors).
    AUC of cosine similarity, held-out windows against background windows of documents the
    latent is absent from."""
    items = [it for it in items if len(it[2]) >= min_held_out]
    if not items or not background:
        return {}
    bg_vecs = emb.encode([w for w, _ in background], batch_size=256)
    texts = sorted({w for _, _, ws in items for w in ws if isinstance(w, str)})
    vec_of = dict(zip(texts, emb.encode(texts, batch_size=256))) if texts else {}
    out: dict[int, float] = {}
    for latent, label_vec, windows in items:
        neg = np.asarray([i for i, (_, fires) in enumerate(background) if latent not in fires])
        if len(neg) == 0:
            neg = np.arange(len(background))
        pos = np.stack([vec_of[w] if isinstance(w, str) else w for w in windows]) @ label_vec
        out[latent] = round(float(auc_rows(pos[:, None], (bg_vecs[neg] @ label_vec)[:, None])[0]), 3)
    return out
