"""Parquet interchange: take an index's vectors to pandas/DuckDB/Polars/Spark, or load pooled
vectors computed elsewhere (e.g. by a GPU job running this pipeline) into an index.

One row per document: ``id`` (string), ``dataset`` (string), ``text`` (string), ``latents``
(list<int32>), ``values`` (list<float32>), the payload fields (including the firing-span columns
``_fires``/``_offsets``, so explanations survive a round trip), and with ``--dense`` a ``dense``
(list<float32>) column. The index's recipe (reader, layer, windowing, SAE hash, pooling, embedder)
is stored as JSON in the file's key-value metadata under ``saedex.recipe``: an import creates an
index with that recipe, or refuses a file whose recipe differs from an existing index's.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexer.core.errors import InputError
from indexer.encode.embedder import DEFAULT_EMBEDDER, get_embedder
from indexer.encode.recipe import IncompleteRecipe, Manifest, Recipe, create_manifest, read_manifest
from indexer.labels.refresh import refresh_latents
from indexer.store import DocPoint, Filter, Store, open_store
from indexer.store.catalog import add_dataset
from indexer.store.columns import column_values, payload_table, writer_for
from indexer.store.schema import FIRES, OFFSETS, PARQUET_CORE, UNITS

SPAN_FIELDS = (FIRES, OFFSETS, UNITS)

RECIPE_KEY = b"saedex.recipe"


class InterchangeError(InputError):
    """A file that cannot be imported or exported; the one-line message names the row or column."""


def export_parquet(store: Store, manifest: Manifest, path: Path, flt: Filter | None = None, dense: bool = False,
                   progress: bool = True) -> dict:
    """Write the index (or a filtered slice) to ``path``; returns counts."""
    tables = []
    n = 0
    for hits in store.scroll_docs(flt=flt, with_sparse=True, with_dense=dense, payload_fields=None, batch=2000):
        ids, lat, val, dense_rows, payloads = [], [], [], [], []
        for h in hits:
            ids.append(h.doc_id)
            s = h.sparse or {}
            order = sorted(s)
            lat.append(order)
            val.append([float(s[i]) for i in order])
            payload = dict(h.payload)
            if dense:
                dense_rows.append(payload.pop("_dense"))
            payload.pop("doc_id", None)
            payloads.append(payload)
        t = _rows_table(ids, lat, val, payloads, dense_rows if dense else None)
        tables.append(t)
        n += len(ids)
        if progress:
            print(f"export: {n:,} documents", file=sys.stderr, flush=True)
    table = pa.concat_tables(tables, promote_options="permissive") if tables else _rows_table([], [], [], [], [] if dense else None)
    meta = dict(table.schema.metadata or {})
    meta[RECIPE_KEY] = json.dumps(manifest.recipe.to_dict()).encode()
    pq.write_table(table.replace_schema_metadata(meta), str(path), compression="zstd")
    return {"documents": n, "path": str(path), "columns": table.column_names, "dense": dense}


def _rows_table(ids, lat, val, payloads, dense_rows) -> pa.Table:
    texts = [p.pop("text", None) for p in payloads]
    datasets = [p.pop("dataset", None) for p in payloads]
    extra = payload_table(ids, payloads).drop_columns(["doc_id"])
    cols = {"id": pa.array(ids, pa.string()), "dataset": pa.array(datasets, pa.string()), "text": pa.array(texts, pa.string()),
            "latents": pa.array(lat, pa.list_(pa.int32())), "values": pa.array(val, pa.list_(pa.float32()))}
    # payload_table drops text/_fires/_offsets/_units (the columnar copy never filters on them); keep the spans here
    for k in SPAN_FIELDS:
        if k != UNITS or any(p.get(k) for p in payloads):
            cols[k] = pa.array([p.get(k) for p in payloads], pa.string())
    table = pa.table(cols)
    for name in extra.column_names:
        table = table.append_column(extra.schema.field(name), extra.column(name))
    if dense_rows is not None:
        table = table.append_column("dense", pa.array(dense_rows, pa.list_(pa.float32())))
    return table


@dataclass
class ImportReport:
    index: str
    read: int = 0
    indexed: int = 0
    already_indexed: int = 0
    dense_computed: int = 0
    latents_relabelled: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def read_recipe(path: Path, index: str = "?") -> tuple[pq.ParquetFile, Recipe]:
    try:
        pf = pq.ParquetFile(str(path))
    except (OSError, pa.ArrowException) as e:
        raise InterchangeError(f"{path}: not a readable Parquet file ({e})") from None
    meta = pf.schema_arrow.metadata or {}
    if RECIPE_KEY not in meta:
        raise InterchangeError(f"{path}: no saedex.recipe in the file's metadata (write it with `saedex export`, "
                               "or add the recipe of the pipeline that made the vectors)")
    try:
        raw = json.loads(meta[RECIPE_KEY])
        int(raw["sae"]["d_sae"])
    except (ValueError, KeyError, TypeError):
        raise InterchangeError(f"{path}: saedex.recipe is not valid JSON with sae.d_sae") from None
    try:  # an older or newer saedex's file is refused as such (OutdatedIndex: how to rebuild)
        recipe = Recipe.from_dict(raw, index)
    except IncompleteRecipe as e:
        raise InterchangeError(f"{path}: saedex.recipe: {e}") from None
    missing = {"id", "latents", "values", "text"} - set(pf.schema_arrow.names)
    if missing:
        raise InterchangeError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return pf, recipe


def import_parquet(path: Path, index: str, qdrant_url: str | None = None, batch: int = 1000, progress: bool = True,
                   refresh: bool = True) -> ImportReport:
    """Load a file of pooled vectors into ``index`` (created from the file's recipe if new).

    Every row is validated before the first write (ids, lengths, latent range, finite
    non-negative values), so a bad file leaves the index untouched. Ids already in the index are
    skipped, as with ``saedex index``."""
    path = Path(path)
    pf, recipe = read_recipe(path, index)
    d_sae = recipe.n_latents
    table = pf.read()
    _validate(table, d_sae, path, recipe)
    report = ImportReport(index=index, read=table.num_rows)
    with open_store(index, qdrant_url) as store:
        store.lock()
        existing = read_manifest(store, index)
        embedder = get_embedder(recipe.embedder or DEFAULT_EMBEDDER)
        if existing is not None:
            existing.recipe.require_compatible(recipe, index)
        else:
            store.create(dense_dim=embedder.dim, label_dim=embedder.dim)
            create_manifest(store, recipe)
        ids = table.column("id").to_pylist()
        present = store.existing_doc_ids(ids)
        report.already_indexed = len(present)
        datasets = sorted({d for d in (table.column("dataset").to_pylist() if "dataset" in table.column_names else []) if d})
        for d in datasets or ["imported"]:
            add_dataset(store, d)
        columns = writer_for(store, replacing=False)
        payload_cols = [c for c in table.column_names if c not in PARQUET_CORE]
        rows = [i for i, d in enumerate(ids) if d not in present]
        for s in range(0, len(rows), batch):
            part = table.take(pa.array(rows[s : s + batch]))
            pts = _points(part, payload_cols, embedder, report)
            store.upsert_docs(pts)
            if columns is not None:
                columns.append_points(pts)
            report.indexed += len(pts)
            if progress:
                print(f"import: {report.indexed:,}/{len(rows):,} documents", file=sys.stderr, flush=True)
        if refresh and report.indexed:
            report.latents_relabelled = refresh_latents(store, progress=progress)
    return report


def _points(part: pa.Table, payload_cols: list[str], embedder, report: ImportReport) -> list[DocPoint]:
    ids = part.column("id").to_pylist()
    texts = part.column("text").to_pylist()
    lat = part.column("latents").to_pylist()
    val = part.column("values").to_pylist()
    ds = part.column("dataset").to_pylist() if "dataset" in part.column_names else [None] * len(ids)
    dense = part.column("dense").to_pylist() if "dense" in part.column_names else [None] * len(ids)
    for i, d in enumerate(dense):
        if d is not None and len(d) != embedder.dim:
            raise InterchangeError(f"row id {ids[i]!r}: dense has {len(d)} values; the index's embedder makes {embedder.dim}")
    need = [i for i, d in enumerate(dense) if d is None]
    if need:
        vecs = embedder.encode([texts[i] for i in need])
        for i, v in zip(need, vecs):
            dense[i] = np.asarray(v, np.float32).tolist()
        report.dense_computed += len(need)
    extra = {c: column_values(part, c) for c in payload_cols}
    pts = []
    for r, doc_id in enumerate(ids):
        payload = {c: extra[c][r] for c in payload_cols if extra[c][r] is not None}
        payload.update({"text": texts[r], "dataset": ds[r] or "imported"})
        pts.append(DocPoint(doc_id, [int(x) for x in lat[r]], [float(x) for x in val[r]], dense[r], payload))
    return pts


def _validate(table: pa.Table, d_sae: int, path: Path, recipe: Recipe) -> None:
    ids = table.column("id").to_pylist()
    seen: set[str] = set()
    texts = table.column("text").to_pylist()
    lat = table.column("latents").to_pylist()
    val = table.column("values").to_pylist()
    dense = table.column("dense").to_pylist() if "dense" in table.column_names else None
    for r, doc_id in enumerate(ids):
        where = f"{path}: row {r} (id {doc_id!r})"
        if not isinstance(doc_id, str) or not doc_id:
            raise InterchangeError(f"{path}: row {r}: id must be a non-empty string")
        if doc_id in seen:
            raise InterchangeError(f"{where}: duplicate id")
        seen.add(doc_id)
        if not isinstance(texts[r], str):
            raise InterchangeError(f"{where}: text is missing")
        li, vi = lat[r] or [], val[r] or []
        if len(li) != len(vi):
            raise InterchangeError(f"{where}: {len(li)} latents but {len(vi)} values")
        if any(x is None or x < 0 or x >= d_sae for x in li):
            raise InterchangeError(f"{where}: a latent id is outside [0, {d_sae})")
        if len(set(li)) != len(li):
            raise InterchangeError(f"{where}: a latent id appears twice")
        if any(v is None or not math.isfinite(v) or v < 0 for v in vi):
            raise InterchangeError(f"{where}: values must be finite and non-negative")
        if dense is not None and dense[r] is not None and any(v is None or not math.isfinite(v) for v in dense[r]):
            raise InterchangeError(f"{where}: dense has a missing or non-finite value")
