"""Refresh an index's latents after an ingest, in stages: statistics -> examples -> choose a label
-> score it -> embed it.

1. *Statistics* (:mod:`indexer.store.latent_stats`): one scan gives each latent's document
   frequency, quantiles, top documents and negatives.
2. *Examples* (:mod:`indexer.labels.examples`): the payloads of just those documents are fetched to
   cut out the firing passages.
3. *Choose*: the SAE's concept dictionary names a latent where it ships one for these weights and
   its label reads true here (:mod:`indexer.labels.dictionary.localise`); otherwise the offline
   labeller labels the index's own examples. A stored label whose examples did not change stays
   where its labeller says so (:func:`indexer.labels.labeller.labeller_of`): labelling is the slow part.
4. *Score*: held-out quality of each new offline label.
5. *Embed*: label vectors (what the label says) and snippet vectors (what the latent does).
"""

from __future__ import annotations

import sys

import numpy as np

from indexer.encode.embedder import get_embedder
from indexer.encode.recipe import read_manifest, update_state
from indexer.encode.units import split_units
from indexer.labels.concept_labels import N_BACKGROUND_HERE, label_concepts_here
from indexer.labels.dictionary import dictionary_for
from indexer.labels.dictionary.localise import CONCEPT_HERE_MIN_AUC, concept_qualities_here, dictionary_agrees, localise_label
from indexer.labels.dictionary.vocabulary import taxonomy, taxonomy_vectors
from indexer.labels.examples import build_examples, examples_hash
from indexer.labels.labeller import labeller_of
from indexer.labels.offline import OfflineLabeller
from indexer.labels.windows import WindowCache, example_windows, snippet_vectors, window_vectors
from indexer.store import LatentPoint, Store
from indexer.store.latent_stats import N_BACKGROUND, N_TOP, fetch_payloads, latent_statistics, scan_index


def refresh_latents(store: Store, progress: bool = True, labeller: OfflineLabeller | None = None,
                    own_labels: bool = False) -> int:
    """Recompute latent stats/examples; label latents. Returns #labelled by the offline labeller.

    Labels come from the SAE's concept dictionary where one is shipped for its weights (same names
    for the same latents in every index; no labelling cost). ``own_labels`` (or a latent the
    dictionary lacks) uses the offline labeller on this index's own examples instead.
    """
    recipe = read_manifest(store).recipe
    dictionary = dictionary_for(recipe)
    scan = scan_index(store, progress)
    n_docs = len(scan.doc_ids)
    if n_docs == 0:
        return 0
    rng = np.random.default_rng(0)
    existing = {p.latent: p for p in store.get_latents(with_vectors=True)}
    stats = latent_statistics(scan, rng)

    # Fetch only the documents shown as examples (plus a background sample for word statistics).
    need_docs = {r for st in stats.values() for r in st["top_rows"] + st["neg_rows"]}
    bg_rows = rng.choice(n_docs, size=min(n_docs, N_BACKGROUND), replace=False).tolist()
    payloads = fetch_payloads(store, scan, sorted(need_docs | set(bg_rows)))
    background = [payloads[r] for r in bg_rows if r in payloads]
    labeller = labeller or OfflineLabeller([p["text"] for p in background])
    built, example_rows = build_examples(stats, payloads, scan.doc_ids, N_TOP)

    entries: dict[int, dict | None] = {}  # latent -> the dictionary entry that describes them, if any
    why_not: dict[int, str] = {}  # latent -> why its dictionary label gave way to the index's own
    for latent in stats:
        # the concept family is always named by its dictionary: its units are sentences, which the
        # offline (token) labeller cannot read; --own-data relabels the token family only
        token = recipe.family_of(latent) == "token"
        entry = dictionary.entry(latent) if dictionary and not (own_labels and token) else None
        if entry is not None and token and not dictionary_agrees(entry, built[latent]):
            # this index's own examples say otherwise: label them from the index
            why_not[latent] = f"The dictionary's label {entry['label']!r} does not describe this index's top examples."
            entry = None
        entries[latent] = entry
    emb = get_embedder()
    window_cache = WindowCache(store)
    # A concept label must also name what its latent fires on *here* (on the demo index, "Hawaii"
    # fired on "[Quir]ky" and "[dram]atisations", "fun" on "McGuire" and "Gibbons").
    concept_here = concept_qualities_here({l: built[l] for l, e in entries.items() if e is not None and e["kind"] == "concept"},
                                          dictionary, background, emb, progress, window_cache)
    concept_ids = [l for l in stats if recipe.family_of(l) == "concept"]
    here = _concept_labels_here(concept_ids, built, background, dictionary, emb, window_cache, store) if concept_ids and dictionary else {}
    points: list[LatentPoint] = []
    to_label: list[tuple[int, list[dict]]] = []
    to_snippet: list[tuple[int, list[dict]]] = []  # dictionary-labelled latents whose examples changed
    n_concepts_dropped = 0
    for latent, st in stats.items():
        examples, entry = built[latent], entries[latent]
        if latent in here:  # the concept family: named on this index's own sentences
            entry = {**(entry or {}), **here[latent]}
        q_here = None if latent in here else concept_here.get(latent)
        if entry is not None and q_here is not None:
            # A concept-family label was chosen in its latent's own space (held-out units of a
            # balanced corpus), and the offline labeller cannot read sentence units: it stays, with
            # this index's AUC said. A token latent's dictionary label gives way below the bar.
            if q_here < CONCEPT_HERE_MIN_AUC and recipe.family_of(latent) == "token":
                why_not[latent] = (f"The dictionary's label {entry['label']!r} does not name what this latent fires on "
                                   f"here (AUC {q_here:.2f} on its top examples).")
                entry = None
                n_concepts_dropped += 1
            else:  # quality stays the dictionary's (measured on the SAE's training corpus); this index's AUC is shown
                entry = {**entry, "description": f"{entry['description']} In this index: AUC {q_here:.2f} on its top examples."}
        negatives = [{"doc_id": scan.doc_ids[r], "text": payloads[r]["text"][:300]} for r in st["neg_rows"] if r in payloads]
        ehash = examples_hash([e["doc_id"] for e in examples])
        payload = {
            "family": recipe.family_of(latent), "doc_freq": st["doc_freq"], "doc_count": st["doc_count"], "quantiles": st["quantiles"],
            "examples": examples, "negatives": negatives, "examples_hash": ehash,
        }
        old = existing.get(latent)
        same_examples = bool(old and old.payload.get("examples_hash") == ehash)
        stored_by = labeller_of(old.payload.get("label_source", "offline")) if old else None
        if (same_examples and old.payload.get("label") and old.label_vec and stored_by is not None
                and stored_by.keeps(old.payload, entry is not None)):
            payload.update({k: old.payload[k] for k in ("label", "description", "label_source", "kind", "quality", "label_version")
                            if k in old.payload})
            points.append(LatentPoint(latent, old.label_vec, old.snippet_vec, payload))
        elif entry is not None:
            label, description = localise_label(entry, examples)
            payload.update({"label": label, "description": description, "label_source": entry.get("label_source", "dictionary"),
                            "kind": entry["kind"], "quality": entry["quality"]})
            snip = old.snippet_vec if same_examples and old.snippet_vec else None
            label_vec = entry["vec"] if "vec" in entry else dictionary.label_vecs[latent]
            points.append(LatentPoint(latent, np.asarray(label_vec, np.float32).tolist(), snip or [], payload))
            if snip is None:
                to_snippet.append((latent, examples))
        else:
            to_label.append((latent, examples))
            points.append(LatentPoint(latent, [], [], payload))

    by_latent = {p.latent: p for p in points}
    labels = labeller.label_many(to_label, progress=progress)
    qualities = labeller.held_out_qualities(to_label, example_rows, payloads, background)
    if progress and concept_here:
        n_token = sum(recipe.family_of(l) == "token" for l in concept_here)
        print(f"{n_concepts_dropped:,} of {n_token:,} token-family concept labels do not name what their latent "
              f"fires on in this index (AUC < {CONCEPT_HERE_MIN_AUC}): labelled from the index", file=sys.stderr)
    # Label key: what the label says. Snippet key: what the latent *does* (mean of its contexts).
    # The label alone (tokens + context words) is short; the description's quote is already in the snippets.
    lab_texts = [labels[l]["label"] for l, _ in to_label]
    lab_vecs = emb.encode(lab_texts, batch_size=256, progress="embed labels" if progress else None) if lab_texts \
        else np.zeros((0, emb.dim))
    snip_vecs = snippet_vectors([(l, ex) for l, ex in to_label + to_snippet], emb, progress, window_cache)
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
                          "quality": qualities.get(latent), "label_version": labels[latent].get("version")})
        p.label_vec = lv.tolist()
        sv = snip_vecs.get(latent)
        p.snippet_vec = sv.tolist() if sv is not None else lv.tolist()
    store.upsert_latents(points)
    update_state(store, latent_stats_docs=scan.n_records)
    emb.save_query_path()  # the model is loaded now: later CLI searches embed queries without it
    return len(to_label)


def _concept_labels_here(latents: list[int], built: dict[int, list[dict]], background: list[dict], dictionary, emb,
                         window_cache: WindowCache, store: Store | None = None) -> dict[int, dict]:
    """Labels of the concept family's latents chosen on this index (:func:`label_concepts_here`):
    positives are the (cached) windows around each latent's firing sentences; the background, a
    seeded sample of this index's sentences; the candidates, the dictionary's concept labels and
    the taxonomy, plus phrases mined here. All of it in the space the SAE's units were embedded in:
    the index embedder's (``emb``), or the concept SAE's own model (an mpnet family: its vectors
    cached apart, and the chosen label embedded again by ``emb``, where queries meet it)."""
    own = dictionary.own_embedder is not None
    unit_emb = get_embedder(dictionary.own_embedder) if own else emb
    cache = WindowCache(store, "unit_cache.npz") if own else window_cache
    per_latent = {l: example_windows(built[l], N_TOP) for l in latents}
    vecs = window_vectors({k: t for ws in per_latent.values() for k, t in ws}, unit_emb, False, cache)
    positives = {l: np.stack([vecs[k] for k, _ in ws]) for l, ws in per_latent.items() if ws}
    units = [(p.get("doc_id", ""), (s, e, "unit"), p["text"][s:e]) for p in background if p.get("text") for s, e in split_units(p["text"])]
    rng = np.random.default_rng(0)
    units = [units[i] for i in sorted(rng.choice(len(units), size=min(len(units), N_BACKGROUND_HERE), replace=False))] if units else []
    bg_vecs = window_vectors({(d, span): t for d, span, t in units}, unit_emb, False, cache)
    bg = np.stack([bg_vecs[(d, span)] for d, span, _ in units]) if units else np.zeros((0, unit_emb.dim), np.float32)
    if own:
        cache.save()
    names, seen = [], set()
    for l, e in sorted(dictionary.latents.items()):
        if e.get("family") == "concept" and e.get("kind") == "concept" and e["label"] not in seen:
            seen.add(e["label"])
            names.append((l, e["label"]))
    name_vecs = unit_emb.encode([n for _, n in names], batch_size=256) if own and names else [dictionary.label_vecs[l] for l, _ in names]
    pool = [(n, "dictionary", v) for (_, n), v in zip(names, name_vecs)]
    pool += [(c.name, "taxonomy", v) for c, v in zip(taxonomy(), taxonomy_vectors(unit_emb)) if c.name not in seen]
    out = label_concepts_here({l: built[l] for l in positives}, positives, [t for _, _, t in units], bg, dictionary.space_directions,
                              pool, unit_emb)
    if own and out:  # label vectors live where queries are matched: the index embedder's space
        ids = sorted(out)
        for l, v in zip(ids, emb.encode([out[l]["nearest"] for l in ids], batch_size=256)):
            out[l]["vec"] = v
    return out
