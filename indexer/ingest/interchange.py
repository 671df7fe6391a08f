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

import binascii
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexer.core.errors import InputError
from indexer.core.filters import canonical_number
from indexer.core.progress import progress_bar
from indexer.encode.embedder import DEFAULT_EMBEDDER, get_embedder
from indexer.encode.pooling import unpack
from indexer.encode.reader import DEFAULT_READER
from indexer.encode.recipe import IncompleteRecipe, Manifest, Recipe, create_manifest, read_manifest, update_state
from indexer.labels.refresh import refresh_latents
from indexer.store import DocPoint, Filter, Store, open_store
from indexer.store.catalog import add_dataset
from indexer.store.columns import column_values, payload_table, view_writers
from indexer.store.schema import FIRES, OFFSETS, PARQUET_CORE, PROMPT_TEXT, SPANS_OF, UNITS, user_field

SPAN_FIELDS = SPANS_OF["response"]
PROMPT_SPAN_FIELDS = SPANS_OF["prompt"]

RECIPE_KEY = b"saedex.recipe"


class InterchangeError(InputError):
    """A file that cannot be imported or exported; the one-line message names the row or column."""


def export_parquet(store: Store, manifest: Manifest, path: Path, flt: Filter | None = None, dense: bool = False,
                   progress: bool = True) -> dict:
    """Write the index (or a filtered slice) to ``path``; returns counts."""
    tables = []
    n = 0
    bar = progress_bar(store.count(flt), "export", progress)
    two_view = manifest.state.two_view
    for hits in store.scroll_docs(flt=flt, with_sparse=True, with_dense=dense, payload_fields=None, batch=2000):
        ids, lat, val, dense_rows, payloads = [], [], [], [], []
        prompts = ({h.doc_id: h.sparse for h in store.get_docs([h.doc_id for h in hits if PROMPT_TEXT in h.payload],
                                                              with_sparse=True, view="prompt")} if two_view else {})
        for h in hits:
            ids.append(h.doc_id)
            s = h.sparse or {}
            indices, values = sorted_vector(list(s), [s[i] for i in s])
            lat.append(indices)
            val.append(values)
            payload = dict(h.payload)
            if dense:
                dense_rows.append(payload.pop("_dense"))
            payload.pop("doc_id", None)
            if h.doc_id in prompts:
                ps = prompts[h.doc_id] or {}
                payload["_prompt_vector"] = sorted_vector(list(ps), [ps[i] for i in ps])
            payloads.append(payload)
        t = _rows_table(ids, lat, val, payloads, dense_rows if dense else None)
        tables.append(t)
        n += len(ids)
        bar.update(len(ids))
    bar.close()
    table = pa.concat_tables(tables, promote_options="permissive") if tables else _rows_table([], [], [], [], [] if dense else None)
    pq.write_table(with_recipe(table, manifest.recipe), str(path), compression="zstd", row_group_size=10_000)
    return {"documents": n, "path": str(path), "columns": table.column_names, "dense": dense}


def points_table(points: list[DocPoint], recipe: Recipe) -> pa.Table:
    """Freshly encoded documents as rows of the interchange format (dense vectors included), with
    the recipe in the metadata: what a Ray worker returns and a shard file holds, so a shard is a
    file ``saedex import`` reads."""
    payloads, lat, val = [], [], []
    for p in points:
        payload = dict(p.payload)
        if p.prompt_sparse is not None:
            payload["_prompt_vector"] = sorted_vector(*p.prompt_sparse)
        payloads.append(payload)
        indices, values = sorted_vector(p.sparse_indices, p.sparse_values)
        lat.append(indices)
        val.append(values)
    table = _rows_table([p.doc_id for p in points], lat, val, payloads, [list(p.dense) for p in points])
    return with_recipe(table, recipe)


def sorted_vector(indices, values) -> tuple[list[int], list[float]]:
    """A sparse vector as the interchange stores it: latent ids ascending, values beside them."""
    order = sorted(range(len(indices)), key=lambda i: indices[i])
    return [int(indices[i]) for i in order], [float(values[i]) for i in order]


def with_recipe(table: pa.Table, recipe: Recipe) -> pa.Table:
    """The table with ``recipe`` in its key-value metadata (what an import checks)."""
    meta = dict(table.schema.metadata or {})
    meta[RECIPE_KEY] = json.dumps(recipe.to_dict()).encode()
    return table.replace_schema_metadata(meta)


def _rows_table(ids, lat, val, payloads, dense_rows) -> pa.Table:
    texts = [p.pop("text", None) for p in payloads]
    datasets = [p.pop("dataset", None) for p in payloads]
    prompts = [p.pop(PROMPT_TEXT, None) for p in payloads]
    pvec = [p.pop("_prompt_vector", None) for p in payloads]
    # an index built before interchange names were reserved may hold a user field ``id`` or ``prompt``:
    # it travels under its reserved name (``field_id``), as ingest now stores it
    payloads = [{(user_field(k) if k in PARQUET_CORE else k): v for k, v in p.items()} for p in payloads]
    extra = payload_table(ids, payloads).drop_columns(["doc_id"])
    cols = {"id": pa.array(ids, pa.string()), "dataset": pa.array(datasets, pa.string()), "text": pa.array(texts, pa.string()),
            "latents": pa.array(lat, pa.list_(pa.int32())), "values": pa.array(val, pa.list_(pa.float32()))}
    if any(p is not None for p in prompts):  # two-view records: the prompt, its vector and its spans (null: no prompt)
        cols |= {"prompt": pa.array(prompts, pa.string()),
                 "prompt_latents": pa.array([v[0] if v else None for v in pvec], pa.list_(pa.int32())),
                 "prompt_values": pa.array([v[1] if v else None for v in pvec], pa.list_(pa.float32()))}
    # payload_table drops text/_fires/_offsets/_units (the columnar copy never filters on them); keep the spans here
    for k in SPAN_FIELDS + PROMPT_SPAN_FIELDS:
        if k in (FIRES, OFFSETS) or any(p.get(k) for p in payloads):
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


MAX_D_SAE = 1 << 20  # latents per SAE family a file may declare (the shipped ones: 16,384 and 2,048)
MAX_TEXT_CHARS = 10_000_000  # one document's text
MAX_CHUNK_BYTES = 1 << 30  # one column of one row group, decompressed (export writes row groups of 10k rows)
IMPORT_BATCH = 1000  # rows decoded at once
KNOWN_READERS = (DEFAULT_READER, "external")
KNOWN_EMBEDDERS = (None, DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2", "default")
SHIPPED_SAE_PATHS = (None, "", "default")
_PAYLOAD_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)


def _fail(path: Path, msg: str) -> InterchangeError:
    return InterchangeError(f"{path}: {msg}")


def read_recipe(path: Path, index: str = "?") -> tuple[pq.ParquetFile, Recipe]:
    """The file's reader and its recipe, after checking everything that can be checked without
    reading rows: the recipe's types and bounds, the columns' names and Arrow types, and the
    declared decompressed size of every column chunk (a 22 KB file once held one 400 MB
    zstd-compressed text, and a declared ``d_sae`` of 10^12 asked for 7 TiB)."""
    try:
        pf = pq.ParquetFile(str(path))
        schema = pf.schema_arrow
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for broken files
        raise _fail(path, f"not a readable Parquet file ({type(e).__name__})") from None
    meta = schema.metadata or {}
    if RECIPE_KEY not in meta:
        raise _fail(path, "no saedex.recipe in the file's metadata (write it with `saedex export`, "
                          "or add the recipe of the pipeline that made the vectors)")
    try:
        raw = json.loads(meta[RECIPE_KEY])
    except (ValueError, RecursionError):
        raise _fail(path, "saedex.recipe is not valid JSON") from None
    _check_recipe_types(raw, path)
    try:  # an older or newer saedex's file is refused as such (OutdatedIndex: how to rebuild)
        recipe = Recipe.from_dict(raw, index)
    except IncompleteRecipe as e:
        raise _fail(path, f"saedex.recipe: {e}") from None
    _check_schema(schema, path)
    _check_declared_sizes(pf, path)
    return pf, recipe


def _check_recipe_types(raw, path: Path) -> None:
    """Every recipe field of the type and range saedex writes, named when not."""
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise _fail(path, f"saedex.recipe: {what}")

    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    opt_int = lambda v: v is None or is_int(v)  # noqa: E731
    opt_str = lambda v: v is None or isinstance(v, str)  # noqa: E731
    need(isinstance(raw, dict), "expected a JSON object")
    need(is_int(raw.get("version", 1)), "version must be an integer")
    reader = raw.get("reader")
    need(isinstance(reader, dict), "reader must be an object")
    need(isinstance(reader.get("model"), str), "reader.model must be a string")
    for k in ("layer", "max_tokens", "window", "overlap", "d_model"):
        need(opt_int(reader.get(k)) and (reader.get(k) is None or 0 <= reader[k] <= 1_000_000), f"reader.{k} must be an integer in [0, 1000000]")
    for section in ("sae", "concept"):
        sae = raw.get(section)
        if section == "concept" and not sae:
            continue
        need(isinstance(sae, dict), f"{section} must be an object")
        need(is_int(sae.get("d_sae")) and 1 <= sae["d_sae"] <= MAX_D_SAE, f"{section}.d_sae must be an integer in [1, {MAX_D_SAE}]")
        for k in ("path", "hash", "architecture"):
            need(opt_str(sae.get(k)), f"{section}.{k} must be a string")
        need(opt_int(sae.get("k")), f"{section}.k must be an integer")
    need(opt_str(raw.get("embedder")), "embedder must be a string")
    need(raw.get("pooling", "max") == "max", "pooling must be 'max'")
    need(raw.get("inference") is None or isinstance(raw.get("inference"), dict), "inference must be an object")


def check_known_recipe(recipe: Recipe, path: Path) -> None:
    """A new index is created only from a recipe of known parts: the shipped reader (or
    ``external`` vectors), the shipped SAEs, the shipped embedder. A reader, SAE or embedder
    named in a file is loaded by later commands (labels, search), and a name is a path
    (``embedder: "../../../../etc"``): import into an index built with that recipe instead."""
    if recipe.reader.model not in KNOWN_READERS:
        raise _fail(path, f"saedex.recipe names reader {recipe.reader.model!r}; a new index is made only from the shipped "
                          f"reader ({DEFAULT_READER}) or external vectors - import into an index built with that reader")
    for name, sae in (("sae", recipe.sae), ("concept", recipe.concept)):
        if sae is not None and sae.path not in SHIPPED_SAE_PATHS:
            raise _fail(path, f"saedex.recipe names {name} path {sae.path!r}; a new index is made only from the shipped "
                              "SAEs - import into an index built with that SAE")
    if recipe.embedder not in KNOWN_EMBEDDERS:
        raise _fail(path, f"saedex.recipe names embedder {recipe.embedder!r}; a new index is made only with the shipped "
                          f"embedder ({DEFAULT_EMBEDDER}) - import into an index built with that embedder")


def _check_schema(schema: pa.Schema, path: Path) -> None:
    names = schema.names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(path, f"duplicate column(s) {', '.join(map(repr, dupes))}")
    missing = {"id", "latents", "values", "text"} - set(names)
    if missing:
        raise _fail(path, f"missing column(s) {', '.join(sorted(missing))}")
    strings = (pa.types.is_string, pa.types.is_large_string)
    lists = (pa.types.is_list, pa.types.is_large_list)

    def list_of(typ, kinds) -> bool:
        return any(f(typ) for f in lists) and any(k(typ.value_type) for k in kinds)

    for f in schema:
        t = f.type
        ok = {"id": any(k(t) for k in strings), "text": any(k(t) for k in strings), "dataset": any(k(t) for k in strings),
              "latents": list_of(t, (pa.types.is_integer,)), "values": list_of(t, (pa.types.is_floating,)),
              "dense": list_of(t, (pa.types.is_floating,)), "prompt": any(k(t) for k in strings),
              "prompt_latents": list_of(t, (pa.types.is_integer,)), "prompt_values": list_of(t, (pa.types.is_floating,)),
              **{k: any(g(t) for g in strings) for k in SPAN_FIELDS + PROMPT_SPAN_FIELDS}}.get(f.name)
        if ok is None:  # a payload column: what a payload can hold
            ok = any(k(t) for k in _PAYLOAD_TYPES) or (any(g(t) for g in lists) and any(k(t.value_type) for k in _PAYLOAD_TYPES))
        if not ok:
            raise _fail(path, f"column {f.name!r} has type {t}, which an import cannot store "
                              "(payload columns: strings, numbers, booleans or lists of them)")


def _check_declared_sizes(pf: pq.ParquetFile, path: Path) -> None:
    md = pf.metadata
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            if col.total_uncompressed_size > MAX_CHUNK_BYTES:
                raise _fail(path, f"row group {g}, column {col.path_in_schema!r}: {col.total_uncompressed_size:,} bytes "
                                  f"decompressed (at most {MAX_CHUNK_BYTES:,}; write smaller row groups)")


def _batches(pf: pq.ParquetFile):
    """The file's rows as tables of at most IMPORT_BATCH rows (bounded memory)."""
    for batch in pf.iter_batches(batch_size=IMPORT_BATCH):
        yield pa.Table.from_batches([batch])


def parquet_files(path: Path) -> list[Path]:
    """A Parquet file, or every ``*.parquet`` of a folder in name order (the shards a Ray job
    keeps with ``--shards``, or any export split into files)."""
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if p.is_file())
        if not files:
            raise InterchangeError(f"{path}: a folder with no .parquet file")
        return files
    return [path]


def import_parquet(path: Path, index: str, qdrant_url: str | None = None, batch: int = IMPORT_BATCH, progress: bool = True,
                   refresh: bool = True) -> ImportReport:
    """Load a file (or a folder of files) of pooled vectors into ``index`` (created from the
    file's recipe if new).

    Every row of every file is validated before the first write (schema, ids unique, lengths,
    latent range, finite non-negative values, firing offsets within the text), reading in bounded
    batches; the files of a folder must share one recipe. So a bad file leaves the index
    untouched, and an import that fails while writing into an index it created drops that index.
    Ids already in the index (or in an earlier file) are skipped, as with ``saedex index``."""
    files = parquet_files(Path(path))
    checked: list[tuple[Path, pq.ParquetFile]] = []
    recipe = None
    n_rows = 0
    for f in files:
        pf, file_recipe = read_recipe(f, index)
        if recipe is not None and file_recipe.mismatches(recipe):
            raise _fail(f, f"another recipe than {files[0].name} ({'; '.join(file_recipe.mismatches(recipe))})")
        recipe = recipe or file_recipe
        bar = progress_bar(pf.metadata.num_rows, f"check {f.name}" if len(files) > 1 else "check", progress, unit="row")
        n_rows += _validate(pf, recipe, f, bar.update)
        bar.close()
        checked.append((f, pf))
    report = ImportReport(index=index, read=n_rows)
    with open_store(index, qdrant_url) as store:
        store.lock()
        existing = read_manifest(store, index)
        if existing is not None:
            existing.recipe.require_compatible(recipe, index)
            recipe = existing.recipe  # what later loads (embedder, SAE, dictionary) is the index's own
        else:
            check_known_recipe(recipe, files[0])
        created = existing is None
        try:
            for n, (_, pf) in enumerate(checked):
                _write(store, pf, recipe, created and n == 0, report, batch, progress)
            if refresh and report.indexed:
                report.latents_relabelled = refresh_latents(store, progress=progress)
        except BaseException:
            if created:
                store.drop()  # a failed import leaves no index behind
            raise
    return report


def _write(store: Store, pf: pq.ParquetFile, recipe: Recipe, create: bool, report: ImportReport, batch: int, progress: bool) -> None:
    embedder = get_embedder(recipe.embedder or DEFAULT_EMBEDDER)
    if create:
        store.create(dense_dim=embedder.dim, label_dim=embedder.dim)
        create_manifest(store, recipe)
    datasets: set[str] = set()
    for part in _batches(pf):
        if "dataset" in part.column_names:
            datasets |= {d for d in part.column("dataset").to_pylist() if d}
    for d in sorted(datasets) or ["imported"]:
        add_dataset(store, d)
    prepare_views(store, _batches(pf))
    columns = view_writers(store, replacing=False)
    bar = progress_bar(pf.metadata.num_rows, "import", progress, unit="row")
    for part in _batches(pf):
        write_rows(store, part, embedder, columns, report, batch)
        bar.update(part.num_rows)
    bar.close()


def prepare_views(store: Store, tables) -> None:
    """Before writing rows with prompts: the index must have the prompt vector; mark it two-view."""
    if any(_has_prompts(part) for part in tables):
        if not read_manifest(store).state.prompt_vector:
            raise InterchangeError(f"index {store.name!r} was created before prompt views existed and cannot hold the file's "
                                   f"prompts; import into a new index")
        update_state(store, two_view=True)


def write_rows(store: Store, part: pa.Table, embedder, columns: dict, report: ImportReport, batch: int = IMPORT_BATCH,
               replace: frozenset[str] = frozenset()) -> None:
    """Upsert validated interchange rows, a batch at a time, into Qdrant and then the columnar
    copies. Ids already in the index are skipped (counted) unless listed in ``replace`` (``index
    --update`` of documents whose text changed; the caller then passes no columnar writers, which
    readers rebuild)."""
    payload_cols = [c for c in part.column_names if c not in PARQUET_CORE]
    ids = part.column("id").to_pylist()
    present = store.existing_doc_ids(ids) - replace
    report.already_indexed += len(present)
    rows = [i for i, d in enumerate(ids) if d not in present]
    for s in range(0, len(rows), batch):
        sub = part.take(pa.array(rows[s : s + batch], pa.int64()))
        pts = _points(sub, payload_cols, embedder, report)
        store.upsert_docs(pts)
        for view, copy in columns.items():
            copy.append_points(pts, view)
        report.indexed += len(pts)


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
    prompts, plat, pval = (part.column(c).to_pylist() if c in part.column_names else [None] * len(ids)
                           for c in ("prompt", "prompt_latents", "prompt_values"))
    pts = []
    for r, doc_id in enumerate(ids):
        payload = {c: canonical_number(extra[c][r]) for c in payload_cols if extra[c][r] is not None}
        payload.update({"text": texts[r], "dataset": ds[r] or "imported"})
        pt = DocPoint(doc_id, [int(x) for x in lat[r]], [float(x) for x in val[r]], dense[r], payload)
        if prompts[r] is not None:
            payload[PROMPT_TEXT] = prompts[r]
            pt.prompt_sparse = ([int(x) for x in plat[r] or []], [float(x) for x in pval[r] or []])
        pts.append(pt)
    return pts


def _has_prompts(part: pa.Table) -> bool:
    return "prompt" in part.column_names and part.column("prompt").null_count < part.num_rows


def _validate(pf: pq.ParquetFile, recipe: Recipe, path: Path, advance) -> int:
    """Check every row, a batch at a time; returns the row count."""
    d_sae = recipe.n_latents
    seen: set[str] = set()
    r0 = 0
    for part in _batches(pf):
        ids = part.column("id").to_pylist()
        texts = part.column("text").to_pylist()
        lat = part.column("latents").to_pylist()
        val = part.column("values").to_pylist()
        dense = part.column("dense").to_pylist() if "dense" in part.column_names else None
        spans = {k: part.column(k).to_pylist() if k in part.column_names else None for k in SPAN_FIELDS + PROMPT_SPAN_FIELDS}
        prompts, plat, pval = (part.column(c).to_pylist() if c in part.column_names else [None] * len(ids)
                               for c in ("prompt", "prompt_latents", "prompt_values"))
        for n, doc_id in enumerate(ids):
            r = r0 + n
            where = f"{path}: row {r} (id {doc_id!r})"
            if not isinstance(doc_id, str) or not doc_id:
                raise _fail(path, f"row {r}: id must be a non-empty string")
            if doc_id in seen:
                raise InterchangeError(f"{where}: duplicate id")
            seen.add(doc_id)
            text = texts[n]
            if not isinstance(text, str):
                raise InterchangeError(f"{where}: text is missing")
            if len(text) > MAX_TEXT_CHARS:
                raise InterchangeError(f"{where}: text of {len(text):,} characters (at most {MAX_TEXT_CHARS:,})")
            li, vi = lat[n] or [], val[n] or []
            if len(li) != len(vi):
                raise InterchangeError(f"{where}: {len(li)} latents but {len(vi)} values")
            if any(x is None or x < 0 or x >= d_sae for x in li):
                raise InterchangeError(f"{where}: a latent id is outside [0, {d_sae})")
            if len(set(li)) != len(li):
                raise InterchangeError(f"{where}: a latent id appears twice")
            if any(v is None or not math.isfinite(v) or v < 0 for v in vi):
                raise InterchangeError(f"{where}: values must be finite and non-negative")
            if dense is not None and dense[n] is not None and any(v is None or not math.isfinite(v) for v in dense[n]):
                raise InterchangeError(f"{where}: dense has a missing or non-finite value")
            problem = _span_problem({k: (v[n] if v is not None else None) for k, v in spans.items()}, len(text), d_sae)
            if problem:
                raise InterchangeError(f"{where}: {problem}")
            if prompts[n] is not None:  # a two-view record: its prompt's vector and spans, checked the same way
                pl, pv = plat[n] or [], pval[n] or []
                if len(pl) != len(pv) or len(set(pl)) != len(pl) or any(x is None or not 0 <= x < d_sae for x in pl) or \
                        any(v is None or not math.isfinite(v) or v < 0 for v in pv):
                    raise InterchangeError(f"{where}: prompt_latents / prompt_values are not a valid vector "
                                           f"(equal lengths, distinct ids in [0, {d_sae}), finite non-negative values)")
                pspans = {k: (spans[pk][n] if spans[pk] is not None else None) for k, pk in zip(SPAN_FIELDS, PROMPT_SPAN_FIELDS)}
                problem = _span_problem(pspans, len(prompts[n]), d_sae)
                if problem:
                    raise InterchangeError(f"{where}: the prompt's {problem}")
            elif plat[n] is not None:
                raise InterchangeError(f"{where}: prompt_latents without a prompt")
        r0 += len(ids)
        advance(len(ids))
    return r0


def _span_problem(row: dict, text_len: int, d_sae: int) -> str | None:
    """Whether the firing spans fit the text (one that does not broke ``label`` and every search
    of the index for good): offsets and unit spans within [0, len(text)], each firing row a
    latent in range pointing at a token or unit that exists, rows sorted by latent."""
    def spans(key: str):
        raw = row.get(key)
        if not raw:
            return np.zeros((0, 2), np.int64)
        b = raw.encode("ascii", "replace")
        if len(b) > 4 * MAX_TEXT_CHARS:
            raise ValueError(f"{key} too long")
        a = unpack(raw, 2).astype(np.int64)
        return a

    try:
        offs, units, fires = spans(OFFSETS), spans(UNITS), spans(FIRES)
    except (ValueError, TypeError, binascii.Error):
        return "firing spans (_fires/_offsets/_units) are not what saedex writes"
    for name, sp_ in (("_offsets", offs), ("_units", units)):
        if len(sp_) and (sp_.min() < 0 or sp_.max() > text_len or np.any(sp_[:, 0] > sp_[:, 1])):
            return f"{name} holds a span outside the text ({text_len} characters)"
    if len(fires):
        lat, peak = fires[:, 0], fires[:, 1]
        if lat.min() < 0 or lat.max() >= d_sae or np.any(np.diff(lat) < 0):
            return "_fires holds a latent out of range or out of order"
        if np.any(peak >= len(offs)) or np.any((peak < 0) & (-peak - 1 >= len(units))):
            return "_fires points at a token or sentence that _offsets/_units do not have"
    return None
