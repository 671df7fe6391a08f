"""Labels for the concept family, chosen in the latents' own space.

A concept latent reads sentence embeddings, so its top units and any candidate label live in the
same space: a label is good when its embedding separates the latent's top units from units the
latent does not fire on. Candidates come from the vocabulary (taxonomy, empath, WordNet) and from
phrases mined from the top units themselves (1-3 word n-grams in at least three of them and
enriched against the background). The top units are split by rank: the even ranks choose the
label, the odd ranks score it - the quality is never measured on what chose the label.

Negatives are what makes the score mean something. Against random background units nearly any
label near a latent's cluster separates its top units perfectly (median AUC 1.0 on our first
build: the score said nothing). So the negatives are the top units of the latent's nearest
neighbours (by decoder cosine) besides background units: a label must pick *this* latent's units
over those of latents about nearly the same thing ("contracts" vs "debt" vs "revenue receipts").
A label's score is the mean of its AUC against background units and against the neighbours' units.
Where no candidate separates well (held-out AUC below ``MIN_QUALITY``) the label says so
(``kind = "unclear"``) and shows the latent's most central unit instead of a near-miss name.
Where its units share a word's first piece as the embedder splits it ("[Cr]agg", "[Cr]uyff"), the
latent follows that form, and the label names the form (``kind = "form"``, :mod:`indexer.labels.forms`).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from indexer.encode.embedder import Embedder
from indexer.encode.sae import SparseAutoencoder
from indexer.labels.dictionary.labelling import auc_rows
from indexer.labels.dictionary.vocabulary import Concept
from indexer.labels.forms import PieceForm, background_pieces, shared_first_piece

N_TOP = 20
N_BACKGROUND = 3000
SHORTLIST = 48  # vocabulary candidates per latent, by cosine to the mean of its choosing units
MIN_SUPPORT = 3  # a mined phrase appears in at least this many top units
MIN_ENRICHMENT = 5.0  # ... and this many times more often than in the background
MIN_QUALITY = 0.75
N_NEIGHBOURS = 8  # nearest latents whose top units are negatives
TIE = 0.05  # candidates this close to the best AUC compete on coverage
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z]")
_STOP = set("""a an the and or but if of to in on at by for with from as is are was were be been being it its this that these
those i you he she we they me him her us them my your his our their not no do does did have has had will would can could
should may might must so than then there here what which who whom whose when where why how all any each some such
very just also only about into over after before up down out off again more most other own same too s t don doesn
""".split())


@dataclass
class ConceptLabel:
    latent: int
    label: str
    kind: str  # concept | form (its units share a word's first piece: labels.forms) | unclear
    quality: float  # held-out AUC of the label's embedding: odd-ranked top units vs unseen background units
    chosen_auc: float  # AUC on the units that chose it (for the record; not the quality)
    source: str  # taxonomy | empath | wordnet | phrase (of the best candidate)
    nearest: str  # the best candidate (the label itself, unless unclear)
    exemplar: str  # the latent's most central top unit
    top_units: list[str]
    n_fired: int  # units of the corpus it fires on


def _unit_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32; an all-zero row stays zero): cosines are dot products."""
    m = np.asarray(m, np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def top_activations(sae: SparseAutoencoder, X: np.ndarray, n_top: int = N_TOP, block: int = 16384
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per latent, the rows of its ``n_top`` strongest units (-1 where fewer fired), their
    activations, and how many units it fires on."""
    d = sae.d_sae
    best_v = np.full((d, n_top), -np.inf, np.float32)
    best_i = np.full((d, n_top), -1, np.int64)
    fired = np.zeros(d, np.int64)
    with torch.inference_mode():
        for s in range(0, len(X), block):
            vals, idx = sae.encode_topk_sparse(torch.from_numpy(np.asarray(X[s : s + block], np.float32)))
            vals, idx = vals.numpy(), idx.numpy()
            rows = np.repeat(np.arange(s, s + len(vals)), vals.shape[1])
            lat, v = idx.ravel(), vals.ravel()
            keep = v > 0
            lat, v, rows = lat[keep], v[keep], rows[keep]
            fired += np.bincount(lat, minlength=d)
            order = np.lexsort((-v, lat))
            lat, v, rows = lat[order], v[order], rows[order]
            starts = np.searchsorted(lat, np.arange(d))
            ends = np.searchsorted(lat, np.arange(d), side="right")
            for j in np.flatnonzero(ends > starts):
                cand_v = np.concatenate([best_v[j], v[starts[j]:ends[j]][:n_top]])
                cand_i = np.concatenate([best_i[j], rows[starts[j]:ends[j]][:n_top]])
                top = np.argsort(-cand_v, kind="stable")[:n_top]
                best_v[j], best_i[j] = cand_v[top], cand_i[top]
    best_i[~np.isfinite(best_v)] = -1
    return best_i, np.where(np.isfinite(best_v), best_v, 0.0), fired


def _grams(text: str, n_max: int = 3) -> set[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    out = set()
    for n in range(1, n_max + 1):
        for i in range(len(words) - n + 1):
            g = words[i : i + n]
            if g[0] in _STOP or g[-1] in _STOP or (n == 1 and len(g[0]) < 3) or any(len(w) < 2 for w in g):
                continue
            out.add(" ".join(g))
    return out


def mined_phrases(top_texts: list[str], background_df: Counter, n_background: int, min_share: float = 0.0) -> list[str]:
    """Phrases shared by several top units (at least MIN_SUPPORT, and ``min_share`` of them) and
    rare in the background, most enriched first."""
    df = Counter(g for t in top_texts for g in _grams(t))
    scored = []
    for g, c in df.items():
        if c < max(MIN_SUPPORT, min_share * len(top_texts)):
            continue
        enrichment = (c / len(top_texts)) / ((background_df.get(g, 0) + 1) / (n_background + 1))
        if enrichment >= MIN_ENRICHMENT:
            scored.append((enrichment * c, g))
    scored.sort(key=lambda t: (-t[0], -t[1].count(" "), t[1]))  # ties: the longer phrase first
    # drop a phrase inside one already kept ("climate" under "climate change")
    out: list[str] = []
    for _, g in scored:
        if not any(f" {g} " in f" {h} " for h in out):
            out.append(g)
    return out[:12]


def label_concept_latents(sae: SparseAutoencoder, X: np.ndarray, texts: list[str], vocab: list[Concept], vocab_vecs: np.ndarray,
                          emb: Embedder, n_top: int = N_TOP, n_background: int = N_BACKGROUND, min_quality: float = MIN_QUALITY,
                          seed: int = 0, progress: bool = True) -> dict[int, ConceptLabel]:
    """A label for every latent that fires on at least four distinct units of ``X`` (rows of ``texts``)."""
    X = np.asarray(X, np.float32)
    Xn = _unit_rows(X)
    top_i, _, fired = top_activations(sae, X, n_top=n_top * 2)
    rng = np.random.default_rng(seed)
    bg_rows = rng.choice(len(X), size=min(len(X), n_background), replace=False)
    bg_df = Counter(g for r in bg_rows for g in _grams(texts[r]))
    bg_pieces = background_pieces([texts[r] for r in bg_rows], emb.first_piece)
    with torch.inference_mode():
        bg_act = sae.encode(torch.from_numpy(X[bg_rows])).numpy()  # (n_bg, d_sae): which background units each latent fires on
    vocab_vecs = _unit_rows(vocab_vecs)
    plan: dict[int, tuple[list[int], list[str]]] = {}
    for j in range(sae.d_sae):
        rows, seen = [], set()
        for r in top_i[j]:
            if r < 0:
                break
            key = " ".join(texts[r].lower().split())
            if key not in seen:
                seen.add(key)
                rows.append(int(r))
            if len(rows) == n_top:
                break
        if len(rows) >= 4:
            plan[j] = (rows, mined_phrases([texts[r] for r in rows], bg_df, len(bg_rows)))
    dirs = _unit_rows(sae.W_dec.detach().float().numpy())
    neighbours = {}
    for j in plan:
        sims = dirs @ dirs[j]
        sims[j] = -np.inf
        neighbours[j] = [int(x) for x in np.argsort(-sims)[: N_NEIGHBOURS * 2] if int(x) in plan][:N_NEIGHBOURS]
    phrases = sorted({p for _, ph in plan.values() for p in ph})
    phrase_vecs = dict(zip(phrases, emb.encode(phrases, batch_size=256))) if phrases else {}
    out: dict[int, ConceptLabel] = {}
    for n, (j, (rows, ph)) in enumerate(sorted(plan.items())):
        mine = set(rows)
        near = [r for n_ in neighbours[j] for r in plan[n_][0][:6] if r not in mine]
        neg = bg_rows[bg_act[:, j] <= 0]
        near = np.asarray(near, np.int64)
        short = np.argsort(-(vocab_vecs @ Xn[rows[0::2]].mean(0)))[:SHORTLIST]
        cands = [(vocab[i].name, vocab[i].source, vocab_vecs[i]) for i in short] + [(p, "phrase", phrase_vecs[p]) for p in ph]
        name, source, quality, chosen_auc = choose_label(Xn[rows], Xn[neg], Xn[near], cands)
        sims = Xn[rows] @ Xn[rows].T
        exemplar = texts[rows[int(np.argmax(sims.sum(1)))]]
        form = shared_first_piece([texts[r] for r in rows], bg_pieces, emb.first_piece)
        good = quality >= min_quality
        out[j] = ConceptLabel(latent=j, label=form.label if form else name if good else "unclear",
                              kind="form" if form else "concept" if good else "unclear",
                              quality=form.quality if form else quality, chosen_auc=chosen_auc, source="form" if form else source,
                              nearest=name, exemplar=exemplar, top_units=[texts[r] for r in rows], n_fired=int(fired[j]))
        if progress and (n + 1) % 256 == 0:
            print(f"labelled {n + 1:,}/{len(plan):,} concept latents", file=sys.stderr, flush=True)
    return out


def choose_label(pos: np.ndarray, background: np.ndarray, near: np.ndarray, cands: list[tuple[str, str, np.ndarray]]
                 ) -> tuple[str, str, float, float]:
    """(name, source, held-out quality, AUC where chosen) of the candidate that best separates the
    positives (unit vectors in rank order: even ranks choose, odd ranks score) from background and
    neighbour units (halves alternate the same way)."""
    choose, score = pos[0::2], pos[1::2]
    C = _unit_rows(np.stack([c[2] for c in cands]))
    chosen = _contrast(choose @ C.T, background[0::2] @ C.T, near[0::2] @ C.T)
    # Many candidates separate a latent's units almost perfectly; among those within TIE of the
    # best, the one closest to all of them names what they share ("rain", not "drizzle").
    near_best = np.flatnonzero(chosen >= chosen.max() - TIE)
    best = int(near_best[np.argmax((choose @ C[near_best].T).mean(0))])
    c = C[best][:, None]
    held = float(_contrast(score @ c, background[1::2] @ c, near[1::2] @ c)[0])
    return cands[best][0], cands[best][1], round(held, 3), round(float(chosen[best]), 3)


def _contrast(pos: np.ndarray, background: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Per candidate column: mean of the AUC against background units and against the neighbours'
    units (background alone where the latent has no neighbours)."""
    bg = auc_rows(pos, background)
    return bg if len(near) == 0 else 0.5 * (bg + auc_rows(pos, near))


def as_entries(labels: dict[int, ConceptLabel]) -> dict[int, dict]:
    """Dictionary entries (``dictionary.json``) of the concept labels."""
    out = {}
    for j, c in labels.items():
        d = asdict(c)
        d["top_units"] = c.top_units[:5]  # enough to read; the index shows its own examples
        d["description"] = (f'e.g. "{c.exemplar[:160]}"' + ("" if c.kind == "concept" else
                            " Its units share a word's first piece as the embedder splits it: the latent follows that form, not a "
                            f"meaning (nearest name: {c.nearest!r})." if c.kind == "form" else
                            f" No candidate label separates its top units from the background (nearest: {c.nearest!r}, AUC {c.quality:.2f})."))
        out[j] = d
    return out


def build_concept_dictionary(sae: SparseAutoencoder, units_dir, vocab: list[Concept], emb: Embedder, progress: bool = True,
                             text_emb: Embedder | None = None) -> dict:
    """The dictionary of a concept SAE from its training units (``saedex train-sae --family concept``'s
    cache: ``shard_*.npy`` rows are the lines of ``units.txt``): labels, qualities, decoder directions
    and label vectors, in the form :func:`indexer.labels.dictionary.store.save_dictionary` writes.

    ``emb`` embedded the units (labels are chosen in its space). ``text_emb``: the index embedder,
    where queries are matched to label vectors, when it is another model (an mpnet concept family in
    a MiniLM index): label vectors are then embedded by it, the decoder rows are kept as
    ``unit_directions``, and ``directions`` become each latent's top units minus the background in
    its space (the contrastive direction the token dictionary keeps too)."""
    units_dir = Path(units_dir)
    texts = units_dir.joinpath("units.txt").read_text(encoding="utf-8").splitlines()
    X = np.concatenate([np.load(p) for p in sorted(units_dir.glob("shard_*.npy")) if ".tmp" not in p.name]).astype(np.float32)
    texts = texts[: len(X)]
    vocab_vecs = emb.encode([c.text for c in vocab], batch_size=256)
    labels = label_concept_latents(sae, X, texts, vocab, vocab_vecs, emb, progress=progress)
    directions = _unit_rows(sae.W_dec.detach().float().numpy())
    text_emb = text_emb or emb
    label_vecs = np.zeros((sae.d_sae, text_emb.dim), np.float32)
    ids = sorted(labels)
    if ids:
        label_vecs[ids] = text_emb.encode([labels[j].label if labels[j].kind == "concept" else labels[j].exemplar for j in ids],
                                          batch_size=256)
    kinds = Counter(c.kind for c in labels.values())
    out = {"latents": as_entries(labels), "directions": directions, "label_vecs": label_vecs,
           "build": {"family": "concept", "embedder": emb.name, "units": len(X), "vocabulary": len(vocab), "labelled": len(labels),
                     **kinds, "median_quality": float(np.median([c.quality for c in labels.values()])) if labels else None}}
    if text_emb is not emb:
        rng = np.random.default_rng(0)
        background = [texts[i] for i in rng.choice(len(texts), size=min(len(texts), N_BACKGROUND), replace=False)]
        out["unit_directions"] = directions
        out["directions"] = contrastive_directions({j: labels[j].top_units for j in ids}, background, text_emb, sae.d_sae)
    return out


def contrastive_directions(top_units: dict[int, list[str]], background: list[str], emb: Embedder, d_sae: int) -> np.ndarray:
    """(d_sae, emb.dim) unit rows: the mean of each latent's top units minus the background's mean,
    in ``emb``'s space (zero for latents without units)."""
    flat = sorted({t for us in top_units.values() for t in us})
    vec = dict(zip(flat, emb.encode(flat, batch_size=256))) if flat else {}
    base = emb.encode(background, batch_size=256).mean(0) if background else np.zeros(emb.dim, np.float32)
    out = np.zeros((d_sae, emb.dim), np.float32)
    for j, us in top_units.items():
        if us:
            out[j] = np.mean([vec[t] for t in us], axis=0) - base
    return _unit_rows(out)


N_BACKGROUND_HERE = 2000  # background units of an index, for its own concept labels
PHRASE_SHARE_HERE = 0.25  # a phrase names a latent here when a quarter of its firing sentences hold it


class ConceptLabeller:
    """Concept-family labels chosen in the latents' own space on an index's examples
    (``label_source = "embedding"``); recomputed on every refresh (its inputs are cached vectors)."""

    name = "embedding"

    @staticmethod
    def keeps(payload: dict, dictionary_has_it: bool) -> bool:
        return False


def label_concepts_here(examples: dict[int, list[dict]], positives: dict[int, np.ndarray], background_units: list[str],
                        background_vecs: np.ndarray, directions: np.ndarray, pool: list[tuple[str, str, np.ndarray]], emb: Embedder,
                        min_quality: float = MIN_QUALITY) -> dict[int, dict]:
    """Concept-family labels chosen on an index's own examples, in the latents' own space.

    The dictionary was labelled on the SAE's training corpus; in another corpus a latent may fire
    on other sentences (on the demo index, a latent the dictionary called "losing your hair" fired on
    "strands"), and the dictionary's score says nothing about that. Here the positives are windows
    around this index's firing sentences (``positives``: latent -> unit vectors in rank order), the
    negatives this index's background units and the neighbouring latents' positives (neighbours by
    ``directions``, the decoder rows), and the candidates the ``pool`` (the dictionary's own labels,
    the taxonomy) plus phrases mined from the latent's firing sentences here."""
    bg_df = Counter(g for t in background_units for g in _grams(t))
    plan, sentences = {}, {}
    for l, ex in examples.items():
        sentences[l] = [e["text"][e["span"][0]:e["span"][1]] for e in ex if e.get("span")]
        if l in positives and len(positives[l]) >= 4:
            plan[l] = mined_phrases(sentences[l], bg_df, len(background_units), min_share=PHRASE_SHARE_HERE)
    phrases = sorted({p for ph in plan.values() for p in ph})
    phrase_vecs = dict(zip(phrases, emb.encode(phrases, batch_size=256))) if phrases else {}
    bg_pieces = background_pieces(background_units, emb.first_piece)
    pool_vecs = _unit_rows(np.stack([v for _, _, v in pool]) if pool else np.zeros((0, emb.dim), np.float32))
    ids = sorted(plan)
    dirs = _unit_rows(directions[ids])
    bg = _unit_rows(background_vecs)
    out = {}
    for n, l in enumerate(ids):
        pos = _unit_rows(positives[l])
        sims = dirs @ dirs[n]
        sims[n] = -np.inf
        near_ids = [ids[i] for i in np.argsort(-sims)[:N_NEIGHBOURS]] if len(ids) > 1 else []
        near = np.concatenate([positives[m][:6] for m in near_ids]) if near_ids else np.zeros((0, pos.shape[1]), np.float32)
        near = _unit_rows(near)
        short = np.argsort(-(pool_vecs @ pos[0::2].mean(0)))[:SHORTLIST] if len(pool_vecs) else []
        cands = [pool[i] for i in short] + [(p, "phrase", phrase_vecs[p]) for p in plan[l]]
        if not cands:
            continue
        name, source, quality, chosen_auc = choose_label(pos, bg, near, cands)
        vec = next(np.asarray(v, np.float32) for n_, _, v in cands if n_ == name)
        exemplar = next((e["text"][e["span"][0]:e["span"][1]] for e in examples[l] if e.get("span")), "")
        form = shared_first_piece(sentences[l], bg_pieces, emb.first_piece)
        if form is not None:
            out[l] = {"label": form.label, "kind": "form", "quality": form.quality, "label_source": ConceptLabeller.name,
                      "vec": vec, "nearest": name, "description": _form_description(form, name, quality)}
            continue
        good = quality >= min_quality
        out[l] = {"label": name if good else "unclear", "kind": "concept" if good else "unclear", "quality": quality,
                  "label_source": ConceptLabeller.name, "vec": vec, "nearest": name,
                  "description": f"Chosen on this index's firing sentences, e.g. \"{exemplar[:160]}\" (held-out AUC {quality:.2f}; from {source})."
                  + ("" if good else f" No candidate separates them from the background well (nearest: {name!r}).")}
    return out


def _form_description(form: PieceForm, nearest: str, auc: float) -> str:
    return (f"Its sentences share a word's first piece as the embedder splits it, \"{form.piece}\" ({form.share:.0%} of them, "
            f"{form.background:.0%} of background sentences): the latent follows that form, not a meaning "
            f"(nearest name: {nearest!r}, AUC {auc:.2f}).")
