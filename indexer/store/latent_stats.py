"""Per-latent statistics, examples, offline labels and label embeddings, from a scan of the index.

Run after every ingest. One scan of the sparse vectors gives each latent's document frequency,
activation quantiles (p90 normalises search scores) and its top-activating documents; the
payloads of just those documents are then fetched to cut out the firing spans. A latent whose
top examples did not change keeps its label and embeddings (labelling is the slow part).
"""

from __future__ import annotations

import json

import hashlib
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from indexer.labels.dictionary.labelling import CONCEPT_MIN_AUC
from indexer.encode.embedder import get_embedder
from indexer.labels.forms import shared_form
from indexer.labels.offline import rank_weight
from indexer.encode.pooling import fire_spans
from indexer.encode.recipe import read_manifest, update_state
from indexer.store import LatentPoint, Store

N_TOP = 20
DUPLICATE_SLACK = 5  # extra top documents read so that N_TOP examples remain after duplicates go
N_NEG = 5
N_SNIPPETS = 3  # snippet embedding dominates refresh time; 3 short windows per latent
N_CONCEPT_CHECK = 10  # top examples that check a dictionary concept label against this index
# A dictionary concept label stays where its embedding ranks windows around this index's own top
# examples above background windows more often than not (AUC >= 0.5); below, it names something
# else than what the latent fires on here. Dev queries (SAE MAP; 0.371 with no check): 0.5 -> 0.372,
# 0.6 -> 0.366, 0.7 (the dictionary's own bar) -> 0.357: dense latents fire noisily at their top
# yet their concept ("programming") still carries the query - their label stays, scored below.
CONCEPT_HERE_MIN_AUC = 0.5
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


BLOCK_NNZ = 40_000_000  # non-zeros held at once while computing latent statistics (~400 MB)


@dataclass
class Scan:
    """The index's pooled vectors for latent statistics: doc ids in canonical order, and the
    non-zeros delivered one block of latents at a time (memory stays ~BLOCK_NNZ x 10 bytes
    whatever the index size; a 1M-document index has ~1.5 billion non-zeros)."""

    doc_ids: list[str]
    blocks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]]  # (latent, value, row) per block


def scan_index(store: Store, progress: bool = False, block_nnz: int = BLOCK_NNZ) -> Scan:
    """Read the columnar copy (rebuilt from Qdrant if stale): one pass for ids and per-latent
    counts, then one pass per block of latents holding at most ``block_nnz`` non-zeros."""
    from indexer.store.columns import fresh_copy

    copy = fresh_copy(store, read_manifest(store).recipe, progress=progress)
    doc_ids: list[str] = []
    keys = []
    counts = np.zeros(copy.d_sae, np.int64)
    for shard in copy.iter_shards():
        doc_ids.extend(shard.doc_ids())
        keys.append(np.asarray(shard.order))
        counts += np.bincount(shard.indices, minlength=copy.d_sae)
    # Rows in canonical order (by Qdrant point id), so examples, negatives and labels do not
    # depend on the order documents were written in (an import or a rebuild gives the same).
    perm = np.argsort(np.concatenate(keys) if keys else np.zeros(0, np.uint64), kind="stable")
    rank = np.empty_like(perm)
    rank[perm] = np.arange(len(perm))
    ids = [doc_ids[i] for i in perm]
    cuts = [0]
    acc = 0
    for lat, c in enumerate(counts.tolist()):
        if acc and acc + c > block_nnz:
            cuts.append(lat)
            acc = 0
        acc += c
    cuts.append(copy.d_sae)

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            lat_l, val_l, row_l = [], [], []
            base = 0
            for shard in copy.iter_shards():
                idx = np.asarray(shard.indices)
                pos = np.flatnonzero((idx >= lo) & (idx < hi)) if (lo, hi) != (0, copy.d_sae) else np.arange(len(idx))
                lat_l.append(idx[pos].astype(np.int32))
                val_l.append(np.asarray(shard.values[pos], np.float32))
                row_l.append(rank[base + np.searchsorted(shard.indptr, pos, side="right") - 1].astype(np.int32))
                base += shard.rows
            cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
            yield cat(lat_l, np.int32), cat(val_l, np.float32), cat(row_l, np.int32)

    return Scan(ids, blocks)


def _examples_hash(doc_ids: list[str]) -> str:
    return hashlib.sha256("\x1f".join(doc_ids).encode()).hexdigest()[:16]


def snippet(text: str, span: list[int], width: int = 90) -> dict:
    """A window of ``text`` around ``span`` with the span's position inside the window."""
    s, e = span
    a, b = max(0, s - width), min(len(text), e + width)
    # widen to word boundaries so snippets do not start mid-word
    while a > 0 and not text[a - 1].isspace() and s - a < width + 20:
        a -= 1
    while b < len(text) and not text[b].isspace() and b - e < width + 20:
        b += 1
    return {"text": text[a:b], "span": [s - a, e - a]}


def refresh_latents(store: Store, progress: bool = True, labeller=None, own_labels: bool = False) -> int:
    """Recompute latent stats/examples; label latents. Returns #labelled by the offline labeller.

    Labels come from the SAE's concept dictionary where one is shipped for its weights (same names
    for the same latents in every index; no labelling cost). ``own_labels`` (or a latent the
    dictionary lacks) uses the offline labeller on this index's own examples instead.
    """
    from indexer.labels.dictionary import dictionary_for
    from indexer.labels.offline import LABELLER_VERSION, OfflineLabeller

    dictionary = None if own_labels else dictionary_for(read_manifest(store).recipe)

    scan = scan_index(store, progress)
    n_docs = len(scan.doc_ids)
    if n_docs == 0:
        return 0
    rng = np.random.default_rng(0)

    existing = {p.latent: p for p in store.get_latents(with_vectors=True)}
    stats: dict[int, dict] = {}
    need_docs: set[int] = set()
    for lat_b, val_b, row_b in scan.blocks():
        order = np.lexsort((row_b, -val_b, lat_b))  # by latent, strongest first; ties: canonical row order
        lat, val, row = lat_b[order], val_b[order], row_b[order]
        bounds = np.flatnonzero(np.diff(lat)) + 1
        starts = np.concatenate([[0], bounds]) if len(lat) else np.zeros(0, int)
        ends = np.concatenate([bounds, [len(lat)]]) if len(lat) else np.zeros(0, int)
        for s, e in zip(starts, ends):
            latent = int(lat[s])
            vals = val[s:e]
            top_rows = row[s : min(e, s + N_TOP + DUPLICATE_SLACK)]
            neg: list[int] = []
            if e - s < n_docs:
                cands = rng.integers(0, n_docs, size=4 * N_NEG)
                absent = ~np.isin(cands, row[s:e])  # one vectorised test, not a set of every row per latent
                for cand, ok in zip(cands.tolist(), absent.tolist()):
                    if ok and cand not in neg:
                        neg.append(cand)
                    if len(neg) >= N_NEG:
                        break
            stats[latent] = {
                "doc_count": int(e - s),
                "doc_freq": float((e - s) / n_docs),
                "quantiles": {name: float(np.quantile(vals, q)) for name, q in QUANTILES.items()} | {"max": float(vals[0])},
                "top_rows": top_rows.tolist(),
                "top_values": vals[: len(top_rows)].tolist(),
                "neg_rows": neg,
            }
            need_docs.update(top_rows.tolist())
            need_docs.update(neg)

    # Fetch only the documents shown as examples (plus a background sample for word statistics).
    bg_rows = rng.choice(n_docs, size=min(n_docs, 3000), replace=False).tolist()
    fetch = sorted(need_docs | set(bg_rows))
    payloads: dict[int, dict] = {}
    for s in range(0, len(fetch), 500):
        rows = fetch[s : s + 500]
        for r, h in zip(rows, store.get_docs([scan.doc_ids[r] for r in rows])):
            payloads[r] = h.payload
    labeller = labeller or OfflineLabeller([payloads[r]["text"] for r in bg_rows if r in payloads])

    points: list[LatentPoint] = []
    to_label: list[tuple[int, list[dict]]] = []
    to_snippet: list[tuple[int, list[dict]]] = []  # dictionary-labelled latents whose examples changed
    # One decode per document: which of the requested latents peak where.
    wanted: dict[int, list[int]] = {}
    for latent, st in stats.items():
        for r in st["top_rows"]:
            wanted.setdefault(r, []).append(latent)
    spans_by_row = {r: fire_spans(payloads[r], lats) for r, lats in wanted.items() if r in payloads}
    example_rows: dict[int, list[int]] = {}  # latent -> document row of each example, for label quality
    built: dict[int, list[dict]] = {}  # latent -> its examples
    entries: dict[int, dict | None] = {}  # latent -> the dictionary entry that describes them, if any
    why_not: dict[int, str] = {}  # latent -> why its dictionary label gave way to the index's own
    for latent, st in stats.items():
        examples, rows = [], []
        for r, v in zip(st["top_rows"], st["top_values"]):
            p = payloads.get(r)
            if p is None:
                continue
            span = spans_by_row.get(r, {}).get(latent)
            ex = {"doc_id": scan.doc_ids[r], "activation": round(float(v), 4), "dataset": p.get("dataset")}
            if span:
                ex.update(snippet(p["text"], span))
                ex["doc_span"] = span
            else:
                ex.update({"text": p["text"][:200], "span": None})
            examples.append(ex)
            rows.append(r)
        examples, rows = distinct_examples(examples, rows, N_TOP)
        example_rows[latent] = rows
        built[latent] = examples
        entry = dictionary.entry(latent) if dictionary else None
        if entry is not None and not dictionary_agrees(entry, examples):
            # this index's own examples say otherwise: label them from the index
            why_not[latent] = f"The dictionary's label {entry['label']!r} does not describe this index's top examples."
            entry = None
        entries[latent] = entry
    emb = get_embedder()
    window_cache = _WindowCache(store)
    # A concept label must also name what its latent fires on *here* (on the demo index, "Hawaii"
    # fired on "[Quir]ky" and "[dram]atisations", "fun" on "McGuire" and "Gibbons").
    concept_here = _concept_qualities_here({l: built[l] for l, e in entries.items() if e is not None and e["kind"] == "concept"},
                                           dictionary, [payloads[r] for r in bg_rows if r in payloads], emb, progress, window_cache)
    n_concepts_dropped = 0
    for latent, st in stats.items():
        examples, entry = built[latent], entries[latent]
        q_here = concept_here.get(latent)
        if entry is not None and q_here is not None:
            if q_here < CONCEPT_HERE_MIN_AUC:
                why_not[latent] = (f"The dictionary's label {entry['label']!r} does not name what this latent fires on "
                                   f"here (AUC {q_here:.2f} on its top examples).")
                entry = None
                n_concepts_dropped += 1
            else:  # quality stays the dictionary's (measured on the SAE's training corpus); this index's AUC is shown
                entry = {**entry, "description": f"{entry['description']} In this index: AUC {q_here:.2f} on its top examples."}
        negatives = [{"doc_id": scan.doc_ids[r], "text": payloads[r]["text"][:300]} for r in st["neg_rows"] if r in payloads]
        ehash = _examples_hash([e["doc_id"] for e in examples])
        payload = {
            "doc_freq": st["doc_freq"], "doc_count": st["doc_count"], "quantiles": st["quantiles"],
            "examples": examples, "negatives": negatives, "examples_hash": ehash,
        }
        old = existing.get(latent)
        old_source = old.payload.get("label_source", "offline") if old else ""
        # An LLM label stays while its examples do; an offline label stays when it is still wanted.
        keep_old = bool(old and old.payload.get("examples_hash") == ehash and old.payload.get("label") and old.label_vec
                        and (old_source.startswith("llm:") or (old_source == "offline" and entry is None
                                                                and old.payload.get("label_version") == LABELLER_VERSION)))
        if keep_old:
            payload.update({k: old.payload[k] for k in ("label", "description", "label_source", "kind", "quality", "label_version")
                            if k in old.payload})
            points.append(LatentPoint(latent, old.label_vec, old.snippet_vec, payload))
        elif entry is not None:
            label, description = localise_label(entry, examples)
            payload.update({"label": label, "description": description, "label_source": "dictionary",
                            "kind": entry["kind"], "quality": entry["quality"]})
            snip = old.snippet_vec if old and old.payload.get("examples_hash") == ehash and old.snippet_vec else None
            points.append(LatentPoint(latent, dictionary.label_vecs[latent].tolist(), snip or [], payload))
            if snip is None:
                to_snippet.append((latent, examples))
        else:
            to_label.append((latent, examples))
            points.append(LatentPoint(latent, [], [], payload))

    by_latent = {p.latent: p for p in points}
    labels = labeller.label_many(to_label, progress=progress)
    qualities = _offline_qualities(to_label, labeller, example_rows, payloads, [payloads[r] for r in bg_rows if r in payloads])
    if progress and concept_here:
        print(f"{n_concepts_dropped:,} of {len(concept_here):,} dictionary concept labels do not name what their latent "
              f"fires on in this index (AUC < {CONCEPT_HERE_MIN_AUC}): labelled from the index", file=sys.stderr)
    # Label key: what the label says. Snippet key: what the latent *does* (mean of its contexts).
    # The label alone (tokens + context words) is short; the description's quote is already in the snippets.
    lab_texts = [labels[l]["label"] for l, _ in to_label]
    t0 = time.time()
    lab_vecs = emb.encode(lab_texts, batch_size=256) if lab_texts else np.zeros((0, emb.dim))
    if progress:
        print(f"embedded {len(lab_texts):,} labels in {time.time() - t0:.0f} s", file=sys.stderr)
    snip_vecs = _snippet_vectors([(l, ex) for l, ex in to_label + to_snippet], emb, progress, window_cache)
    window_cache.save()
    for latent, _ in to_snippet:
        p = by_latent[latent]
        sv = snip_vecs.get(latent)
        p.snippet_vec = sv.tolist() if sv is not None else p.label_vec
    for (latent, _), lv in zip(to_label, lab_vecs):
        p = by_latent[latent]
        description = " ".join(filter(None, (labels[latent]["description"], why_not.get(latent))))
        p.payload.update({"label": labels[latent]["label"], "description": description,
                          "label_source": labels[latent].get("source", "offline"), "kind": "lexical",
                          "quality": qualities.get(latent) if labels[latent].get("source", "offline") == "offline" else None,
                          "label_version": labels[latent].get("version")})
        p.label_vec = lv.tolist()
        sv = snip_vecs.get(latent)
        p.snippet_vec = sv.tolist() if sv is not None else lv.tolist()
    store.upsert_latents(points)
    update_state(store, latent_stats_docs=n_docs)
    return len(to_label)


def distinct_examples(examples: list[dict], rows: list[int], n: int) -> tuple[list[dict], list[int]]:
    """The first ``n`` examples whose passage (snippet and span) is not shown already.

    The same passage in two documents (agency copy, an article posted twice: the BBC corpus has
    both) is one example; shown twice it takes the place of other evidence and doubles its
    weight in the label."""
    out, out_rows, seen = [], [], set()
    for ex, r in zip(examples, rows):
        key = (ex["text"], tuple(ex.get("span") or ()))
        if key in seen:
            continue
        seen.add(key)
        out.append(ex)
        out_rows.append(r)
        if len(out) == n:
            break
    return out, out_rows


def _offline_qualities(to_label: list[tuple[int, list[dict]]], labeller, example_rows: dict[int, list[int]],
                       payloads: dict[int, dict], background_payloads: list[dict]) -> dict[int, float]:
    """Held-out quality of each offline label (:mod:`indexer.labels.quality`): the label is chosen
    again from the even-ranked examples and its detector scored on the odd-ranked ones against
    background windows the latent does not fire in."""
    from indexer.labels.quality import Background, Detector, held_out_quality, window_keys
    from indexer.labels.offline import OfflineLabeller
    from indexer.encode.pooling import unpack

    if not to_label or not isinstance(labeller, OfflineLabeller):
        return {}
    background = Background(background_payloads)
    offsets: dict[int, np.ndarray] = {}
    out: dict[int, float] = {}
    for latent, examples in to_label:
        shown = [(ex, r) for ex, r in zip(examples, example_rows.get(latent, [])) if ex.get("span") and ex.get("doc_span")]
        if len(shown) < 4:  # two to choose, two to score: fewer says nothing
            continue
        detector = Detector.from_dict(labeller.label([ex for ex, _ in shown[0::2]]).get("detector"))
        held_out = []
        for ex, r in shown[1::2]:
            p = payloads[r]
            if r not in offsets:
                offsets[r] = unpack(p["_offsets"], 2) if p.get("_offsets") else np.zeros((0, 2), np.int32)
            held_out.append(window_keys(p["text"], offsets[r], tuple(ex["doc_span"])))
        q = held_out_quality(detector, held_out, background, latent)
        if q is not None:
            out[latent] = q
    return out


def _example_windows(examples: list[dict], n: int) -> list[tuple[tuple, str]]:
    """(cache key, short window) of the first ``n`` examples that have a firing span."""
    out = []
    for ex in examples:
        if ex.get("span") is None:
            continue
        out.append(((ex["doc_id"], tuple(ex.get("doc_span") or ())), short_window(ex["text"], ex["span"])))
        if len(out) == n:
            break
    return out


class _WindowCache:
    """MiniLM vectors of example windows, keyed by (document, span), kept per index.

    Identical windows are embedded once, and an incremental ingest only embeds windows it has not
    seen. One refresh loads the file once and writes it once (:meth:`save`), however many
    lookups it makes (the concept check and the snippet vectors both read it)."""

    def __init__(self, store: Store | None):
        self.path = store.cache_file("snippet_cache.npz") if store is not None else None
        self.vectors = _load_snippet_cache(self.path) if self.path is not None else {}
        self.dirty = False

    def save(self) -> None:
        if self.dirty and self.path is not None:
            _save_snippet_cache(self.path, self.vectors)
            self.dirty = False


def _window_vectors(windows: dict[tuple, str], emb, progress: bool, window_cache: _WindowCache) -> dict[tuple, np.ndarray]:
    """MiniLM vectors of ``windows`` (key -> text), embedding only those not cached yet."""
    if not windows:
        return {}
    cache = window_cache.vectors
    todo = [k for k in windows if k not in cache]
    if progress and todo:
        print(f"embedding {len(todo):,} latent snippets ({len(windows) - len(todo):,} cached)", file=sys.stderr)
    if todo:
        t0 = time.time()
        vecs = emb.encode([windows[k] for k in todo], batch_size=256)
        if progress:
            print(f"embedded {len(todo):,} snippets in {time.time() - t0:.0f} s", file=sys.stderr)
        for k, v in zip(todo, vecs):
            cache[k] = v.astype(np.float16)
        window_cache.dirty = True
    return {k: cache[k].astype(np.float32) for k in windows}


def _snippet_vectors(items: list[tuple[int, list[dict]]], emb, progress: bool, window_cache: _WindowCache) -> dict[int, np.ndarray]:
    """Mean embedding of each latent's top snippets (what the latent *does*, for query matching)."""
    per_latent = {latent: _example_windows(examples, N_SNIPPETS) for latent, examples in items}
    per_latent = {l: w for l, w in per_latent.items() if len(w) >= 2}
    vecs = _window_vectors({k: t for ws in per_latent.values() for k, t in ws}, emb, progress, window_cache)
    out = {}
    for latent, ws in per_latent.items():
        v = np.mean([vecs[k] for k, _ in ws], axis=0)
        out[latent] = v / max(np.linalg.norm(v), 1e-8)
    return out


def _concept_qualities_here(candidates: dict[int, list[dict]], dictionary, background_payloads: list[dict], emb,
                            progress: bool, window_cache: _WindowCache) -> dict[int, float]:
    """How well each dictionary *concept* label detects its latent in this index: the AUC of
    the label's embedding against windows around the index's own top examples (none of which chose
    the label: it was chosen on the SAE's training corpus) versus background windows of documents
    the latent is absent from (:func:`indexer.labels.quality.embedding_qualities`)."""
    from indexer.labels.quality import embedding_qualities, windows_from_payloads

    if not candidates:
        return {}
    per_latent = {l: _example_windows(ex, N_CONCEPT_CHECK) for l, ex in candidates.items()}
    vecs = _window_vectors({k: t for ws in per_latent.values() for k, t in ws}, emb, progress, window_cache)
    items = [(l, np.nan_to_num(dictionary.label_vecs[l].astype(np.float32)), [vecs[k] for k, _ in ws]) for l, ws in per_latent.items()]
    return embedding_qualities(items, windows_from_payloads(background_payloads), emb)


def _snippet_key(key: tuple) -> str:
    return json.dumps([key[0], list(key[1])], separators=(",", ":"))


def _load_snippet_cache(path) -> dict[tuple, np.ndarray]:
    """The snippet-embedding cache: an ``.npz`` of JSON keys and fp16 rows (never a pickle, so a
    file planted in an index folder cannot run code)."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            keys, vecs = z["keys"].tolist(), z["vectors"]
        out = {}
        for k, v in zip(keys, vecs):
            doc, span = json.loads(k)
            out[(doc, tuple(span))] = v
        return out
    except Exception:  # noqa: BLE001 - a broken cache is rebuilt
        return {}


def _save_snippet_cache(path, cache: dict[tuple, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(cache)
    dim = len(next(iter(cache.values()))) if cache else 0
    vecs = np.stack([cache[k] for k in keys]).astype(np.float16) if keys else np.zeros((0, dim), np.float16)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, keys=np.array([_snippet_key(k) for k in keys], dtype=str), vectors=vecs)
    tmp.replace(path)


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


def short_window(text: str, span: list[int], words: int = 4) -> str:
    s, e = span
    left = text[:s].split()[-words:]
    right = text[e:].split()[:words]
    return " ".join(left + [text[s:e].strip()] + right)
