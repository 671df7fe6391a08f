"""Index a corpus: read -> reader LM -> SAE -> max-pool -> Qdrant (+ dense baseline vectors).

Guarantees:
- *Nothing half-written on bad input*: the whole file is validated before the first write.
- *Idempotent*: documents are keyed by id (default: content hash); ids already in the index
  are skipped, so re-running a file adds nothing.
- *Crash-safe*: each chunk is one upsert (one WAL record in Qdrant Edge, which survives kill -9),
  so a killed run that is started again ends with exactly the documents of an uninterrupted run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.core.errors import InputError
from indexer.core.progress import progress_bar
from indexer.encode.embedder import get_embedder
from indexer.encode.encoder import EncodeCounts, Encoder
from indexer.encode.pooling import pack
from indexer.encode.recipe import create_manifest, read_manifest, update_state
from indexer.ingest.corpus import ReadStats, Record, read_corpus
from indexer.labels.refresh import refresh_latents as refresh_latent_labels
from indexer.store import DocPoint, Store, open_store
from indexer.store.catalog import add_dataset
from indexer.store.columns import view_writers
from indexer.store.schema import HAS_PROMPT, VIEW_KEYS, user_field


@dataclass
class IndexReport:
    index: str
    dataset: str
    read: int = 0
    empty: int = 0
    invalid: int = 0
    duplicates_in_input: int = 0
    duplicates_conflicting: int = 0  # of those, copies whose text or fields differ from the copy kept
    duplicate_examples: list[str] = field(default_factory=list)
    already_indexed: int = 0
    indexed: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    truncated_docs: int = 0
    computed_tokens: int = 0  # positions run through the reader (BOS per window, overlap context)
    changed: int = 0  # ids already indexed with a different text
    updated: int = 0  # of those, replaced (--update)
    ids_normalised: int = 0  # integer ids turned into strings
    seconds: float = 0.0
    latents_relabelled: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    prompts: int = 0  # records read with a prompt (two-view records)
    repeated_texts: int = 0  # texts (responses or prompts) equal to one read earlier in the run: read once
    ray: dict | None = None  # `index --ray`: the job's statistics (workers, shards, per-worker throughput)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if not (k == "ray" and v is None)}
        d["tokens_per_s"] = round(self.tokens / self.seconds, 1) if self.seconds else None
        d["padding_fraction"] = round(self.padded_tokens / max(self.computed_tokens, 1), 4)
        d["window_overhead"] = round(self.computed_tokens / self.tokens, 3) if self.tokens else None
        return d


class Indexer(Encoder):
    """An :class:`Encoder` that also writes: makes payloads and documents for one index."""

    def prepare_store(self, store: Store, index: str, two_view: bool = False) -> None:
        """Validate the recipe (loads the reader: a bad --layer fails here), take the store's lock,
        and only then create the index or check it: a failed or concurrent run leaves no trace.
        ``two_view``: records with prompts are coming; an index created before views existed has
        no vector for them and is refused with the commands that rebuild it."""
        new = self.recipe()
        store.lock()
        existing = read_manifest(store, index)
        if existing is not None:
            existing.recipe.require_compatible(new, index)
            if two_view and not existing.state.prompt_vector:
                raise InputError(f"index {index!r} was created before prompt views existed and cannot hold prompts; "
                                 f"rebuild it: `saedex drop --index {index}`, then index its files again (with --prompt-field)")
        else:
            store.create(dense_dim=get_embedder(self.embedder_name).dim, label_dim=get_embedder(self.embedder_name).dim)
            create_manifest(store, new)
        if two_view and not read_manifest(store, index).state.two_view:
            update_state(store, two_view=True)

    def encode_records(self, records: list[Record], dataset: str, report: IndexReport | None = None) -> list[DocPoint]:
        """Reader + SAE + pooling + dense embedding for a chunk of records; a two-view record's
        prompt is encoded in the same pass (every family) and stored as its own vector and spans.
        The dense vector is the response's (what a dense search of the texts compares)."""
        texts = [r.text for r in records]
        prompts = [r.prompt for r in records if r.prompt is not None]
        counts = EncodeCounts()
        pooled = self.encode_texts(texts + prompts, counts)
        if report is not None:
            for name in ("tokens", "padded_tokens", "computed_tokens", "truncated_docs", "repeated_texts"):
                setattr(report, name, getattr(report, name) + getattr(counts, name))
        dense = get_embedder(self.embedder_name).encode(texts)
        prompt_pooled = iter(pooled[len(texts):])
        points = []
        for r, p, dv in zip(records, pooled, dense):
            payload = {user_field(k): v for k, v in r.fields.items()}
            payload.update({"dataset": dataset, "content_hash": r.content_hash, **view_payload("response", r.text, p)})
            point = DocPoint(doc_id=r.id, sparse_indices=p.indices.tolist(), sparse_values=p.values.tolist(),
                             dense=dv.tolist(), payload=payload)
            if r.prompt is not None:
                q = next(prompt_pooled)
                payload.update(view_payload("prompt", r.prompt, q), **{HAS_PROMPT: True})
                point.prompt_sparse = (q.indices.tolist(), q.values.tolist())
            points.append(point)
        return points


def view_payload(view: str, text: str, p) -> dict:
    """One view's text, length and where each latent fires (packed), under that view's keys."""
    text_key, fires, offsets, units, length = VIEW_KEYS[view]
    return {text_key: text, length: int(len(p.offsets)),
            fires: pack(np.stack([p.indices, p.argmax_token], axis=1)) if len(p.indices) else "",
            offsets: pack(p.offsets), **({units: pack(p.unit_spans)} if p.unit_spans is not None else {})}


DUPLICATE_EXAMPLES = 5


def collect_records(path: str | Path, text_field: str, id_field: str | None, skip_invalid: bool, report: IndexReport,
                    follow_symlinks: bool = False, keep: str = "first", prompt_field: str | None = None) -> list[Record]:
    """Validate and read the whole input first, so a bad line aborts before anything is written.

    A repeated id keeps one copy: the first (``keep="first"``, the default) or the last. Copies
    whose text or fields differ from the one kept are counted and the first few named (file:line
    of both), since dropping them loses labels."""
    if keep not in ("first", "last"):
        raise InputError(f"--keep must be first or last (got {keep!r})")
    stats = ReadStats()
    kept: dict[str, Record] = {}
    for rec in read_corpus(path, text_field=text_field, id_field=id_field, skip_invalid=skip_invalid, stats=stats,
                           follow_symlinks=follow_symlinks, prompt_field=prompt_field):
        old = kept.get(rec.id)
        if old is None:
            kept[rec.id] = rec
            continue
        report.duplicates_in_input += 1
        if old.text != rec.text or old.prompt != rec.prompt or old.fields != rec.fields:
            report.duplicates_conflicting += 1
            if len(report.duplicate_examples) < DUPLICATE_EXAMPLES:
                what = sorted(k for k in set(old.fields) | set(rec.fields) if old.fields.get(k) != rec.fields.get(k))
                what = (["text"] if old.text != rec.text else []) + (["prompt"] if old.prompt != rec.prompt else []) + what
                winner, loser = (old, rec) if keep == "first" else (rec, old)
                report.duplicate_examples.append(f"id {rec.id!r}: {loser.where} differs from {winner.where} (kept) in "
                                                 + ", ".join(what))
        if keep == "last":
            kept[rec.id] = rec
    records = list(kept.values())
    report.read, report.empty, report.invalid = stats.read, stats.empty, stats.invalid
    report.ids_normalised = stats.ids_normalised
    report.invalid_examples = stats.invalid_examples
    return records


def plan_records(store: Store, records: list[Record], update: bool, report: IndexReport) -> tuple[list[Record], list[Record], list[Record]]:
    """What a run must encode: (todo, new, changed). An id already indexed with the same content
    hash is done; one indexed with another hash is ``changed`` and in ``todo`` only with ``update``."""
    existing = store.existing_doc_hashes([r.id for r in records]) if records else {}
    changed = [r for r in records if r.id in existing and existing[r.id] != r.content_hash]
    new = [r for r in records if r.id not in existing]
    report.changed = len(changed)
    report.already_indexed = len(existing) - len(changed)
    return (new + changed if update else new), new, changed


def finish_run(store: Store, report: IndexReport, todo: list[Record], new: list[Record], refresh: bool, progress: bool) -> None:
    """After the writes of a run (single-process or Ray): count what was added and replaced, and
    refresh latent statistics and labels when anything changed or they lag the store."""
    report.indexed, report.updated = len(new), len(todo) - len(new)
    stale = read_manifest(store).state.latent_stats_docs != store.count()
    if refresh and (report.indexed or report.updated or stale):
        report.latents_relabelled = refresh_latent_labels(store, progress=progress)


def index_corpus(
    path: str | Path,
    index: str,
    dataset: str | None = None,
    text_field: str = "text",
    id_field: str | None = None,
    skip_invalid: bool = False,
    qdrant_url: str | None = None,
    indexer: Indexer | None = None,
    chunk_docs: int = 128,
    refresh_latents: bool = True,
    progress: bool = True,
    update: bool = False,
    follow_symlinks: bool = False,
    keep: str = "first",
    prompt_field: str | None = None,
) -> IndexReport:
    """Index a corpus file. Ids already present are skipped when their text (and prompt) is
    unchanged; ids whose content changed are reported (``changed``) and, with ``update=True``,
    re-encoded and replaced. An id repeated in the file keeps its first copy (``keep="last"``: its
    last). ``prompt_field``: records holding it are two-view records (prompt -> response)."""
    dataset = dataset or Path(path).name.split(".")[0]
    report = IndexReport(index=index, dataset=dataset)
    t0 = time.time()
    records = collect_records(path, text_field, id_field, skip_invalid, report, follow_symlinks, keep, prompt_field)
    report.prompts = sum(r.prompt is not None for r in records)
    indexer = indexer or Indexer()
    with open_store(index, qdrant_url) as store:
        indexer.prepare_store(store, index, two_view=report.prompts > 0)
        add_dataset(store, dataset)
        todo, new, changed = plan_records(store, records, update, report)
        columns = view_writers(store, replacing=bool(update and changed))
        if todo:
            indexer.reader  # load the models before the clock starts: throughput excludes loading
            get_embedder(indexer.embedder_name)
        bar = progress_bar(len(todo), f"index {dataset}", progress)
        t_enc = time.time()
        for s in range(0, len(todo), chunk_docs):
            chunk = todo[s : s + chunk_docs]
            points = indexer.encode_records(chunk, dataset, report)
            store.upsert_docs(points)
            for view, copy in columns.items():  # after Qdrant: a crash leaves a copy short, which readers detect
                copy.append_points(points, view)
            bar.update(len(chunk))
        bar.close()
        report.seconds = round(time.time() - t_enc, 2)
        finish_run(store, report, todo, new, refresh_latents, progress)
    report.seconds = report.seconds or round(time.time() - t0, 2)
    return report

