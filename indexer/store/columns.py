"""The columnar analytics copy of an index: pooled sparse vectors as memory-mappable CSR shards.

Why: diff, NPMI and clustering need every document's sparse vector. Scrolling Qdrant through the
Python client into dicts cost 30-60 s per analysis at 100k documents; the arithmetic itself is a
small fraction. Qdrant stays the serving engine and the source of truth; this copy is what
analyses read.

Layout (``<index>/columns/``)::

    meta.json                      format, d_sae, index dtype
    shard-<first>-<last>-<rows>/   sequence range and row count live in the name (one atomic rename)
        indptr.npy   int64 (rows + 1)
        indices.npy  uint16 (int32 when d_sae > 65535)
        values.npy   float32, exactly what Qdrant holds
        rows.arrow   Arrow IPC: doc_id + the filterable payload fields (no text, no firing spans)
        order.npy    uint64 canonical sort key per row (the Qdrant point id's top bits)
        counts.npz   per dataset: rows, and per latent the documents where it is non-zero and where
                     it is >= 0.5 x the SAE's reference strength (diff answers dataset slices from these);
                     the same per dataset and document-length bucket (length-matched diffs of datasets)

Consistency with Qdrant: a shard is written to ``tmp-*`` and renamed only after the Qdrant upsert
of the same documents returned, so a kill -9 can leave the copy *short* (never ahead) of Qdrant.
A copy is *fresh* when its row count equals Qdrant's document count; a short, missing or
invalidated copy is rebuilt from a Qdrant scan on first use (the only path for an index written by
another machine). Small shards are merged eight at a time (tiered, like an LSM tree) so an
ingest of 128-document chunks does not leave thousands of files; a merge renames the new shard
in before deleting its inputs, and a shard whose range another shard covers is removed on open.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import scipy.sparse as sp

from indexer.core.filters import Filter, kind_of, value_matches, wanted
from indexer.core.progress import checkpoint
from indexer.encode.floor import COUNT_FLOORS, above_floor, floor_key, reference_for
from indexer.encode.recipe import read_manifest
from indexer.store import SparseMap, StoreError, point_id
from indexer.store.schema import HAS_PROMPT, NOT_COPIED, VIEWS, view_text_payload

FORMAT = 1
DIRNAME = "columns"
LENGTH_FIELD = "n_tokens"  # tokens the reader read: what a document's max-pooled vector was pooled over
# Fixed length buckets on a sqrt(2) scale (1, 2, 3, 4, 6, 8, 11, ... 65,536 tokens): strata of
# length-matched comparisons are groups of consecutive buckets, so counts stored per bucket
# answer them for dataset slices without a pass over the non-zeros.
LENGTH_EDGES = np.unique(np.round(2.0 ** np.arange(0.25, 16.25, 0.25)).astype(np.int64))
N_LENGTH_BUCKETS = len(LENGTH_EDGES) + 1


def length_bucket(tokens: np.ndarray) -> np.ndarray:
    """Bucket of each length (tokens read); -1 where none is stored (NaN)."""
    tokens = np.asarray(tokens, np.float64)
    return np.where(np.isnan(tokens), -1, np.searchsorted(LENGTH_EDGES, np.nan_to_num(tokens), side="right"))


def bucket_strata(lengths: list[np.ndarray], n_strata: int) -> np.ndarray:
    """Stratum of each fixed length bucket (:data:`LENGTH_EDGES`): consecutive buckets grouped so
    that each stratum holds about 1/``n_strata`` of the pooled documents (a bucket goes where its
    midpoint falls). Strata are groups of buckets, not raw quantiles, so the counts the columnar
    copy stores per bucket answer them exactly."""
    hist = np.bincount(length_bucket(np.concatenate(lengths)), minlength=N_LENGTH_BUCKETS).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return np.zeros(N_LENGTH_BUCKETS, np.int64)
    mid = (np.cumsum(hist) - hist / 2) / total
    raw = np.minimum((mid * n_strata).astype(np.int64), n_strata - 1)
    held = np.flatnonzero(hist > 0)  # an empty bucket joins the stratum of the held bucket before it
    raw = raw[held][np.maximum(np.searchsorted(held, np.arange(N_LENGTH_BUCKETS), side="right") - 1, 0)]
    _, dense = np.unique(raw, return_inverse=True)  # strata numbered 0.. without gaps
    return dense.astype(np.int64)


def column_lengths(table: pa.Table) -> np.ndarray:
    """Each row's stored length as float (NaN where missing), vectorised."""
    if LENGTH_FIELD not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table.column(LENGTH_FIELD)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return np.array([float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                         for v in column_values(table, LENGTH_FIELD)], np.float64)
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _sparse_counts(name: str, rows: np.ndarray, cols: np.ndarray, n_rows: int, d: int,
                   block_cells: int = 8_000_000) -> dict[str, np.ndarray]:
    """Counts of (row, col) pairs as CSR arrays ``NAME_indptr/_indices/_data``: per (dataset, length
    bucket) most latents never occur, so dense arrays would be 60x the per-dataset counts. Counted
    densely a block of rows at a time (bincount; a sort of the shard's non-zeros tripled the
    copy's write time), kept sparse."""
    per_block = max(1, block_cells // max(d, 1))
    indptr, indices, data = [np.zeros(1, np.int64)], [], []
    for r0 in range(0, n_rows, per_block):
        r1 = min(n_rows, r0 + per_block)
        sel = (rows >= r0) & (rows < r1) if (r0 > 0 or r1 < n_rows) else slice(None)
        dense = np.bincount((rows[sel] - r0) * d + cols[sel].astype(np.int64), minlength=(r1 - r0) * d).reshape(r1 - r0, d)
        m = sp.csr_matrix(dense.astype(np.int32))
        indptr.append(m.indptr[1:].astype(np.int64) + indptr[-1][-1])
        indices.append(m.indices.astype(np.int32))
        data.append(m.data.astype(np.int32))
    return {f"{name}_indptr": np.concatenate(indptr), f"{name}_indices": np.concatenate(indices) if indices else np.zeros(0, np.int32),
            f"{name}_data": np.concatenate(data) if data else np.zeros(0, np.int32)}


def sparse_counts(counts: dict, name: str, d: int) -> sp.csr_matrix | None:
    """The CSR matrix :func:`_sparse_counts` stored under ``name`` (None if the shard has none)."""
    if f"{name}_indptr" not in counts:
        return None
    indptr = counts[f"{name}_indptr"]
    return sp.csr_matrix((counts[f"{name}_data"], counts[f"{name}_indices"], indptr), shape=(len(indptr) - 1, d))


REBUILD_ROWS = 16384  # rows per shard written by a rebuild or a bulk append (bounds its memory)
FAN_IN = 8  # small shards merged this many at a time
JSON_META = b"saedex.json"


class ColumnCopyError(StoreError):
    """The columnar copy cannot be read or written (a one-line message names the path)."""


@dataclass
class ShardRef:
    path: Path
    first: int
    last: int
    rows: int

    @staticmethod
    def parse(path: Path) -> "ShardRef | None":
        parts = path.name.split("-")
        if len(parts) != 4 or parts[0] != "shard" or not all(p.isdigit() for p in parts[1:]):
            return None
        return ShardRef(path, int(parts[1]), int(parts[2]), int(parts[3]))


@dataclass
class Shard:
    """One shard's arrays (memory-mapped) and row table."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    table: pa.Table
    counts: dict[str, Any]
    order: np.ndarray  # uint64 canonical sort key per row (see :func:`order_keys`)

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    def doc_ids(self) -> list[str]:
        return self.table.column("doc_id").to_pylist()

    def csr(self, d_sae: int, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """The shard (or the given rows of it) as a float32 CSR matrix with int32 indices."""
        if rows is None:
            return sp.csr_matrix((np.asarray(self.values), self.indices.astype(np.int32), np.asarray(self.indptr)),
                                 shape=(self.rows, d_sae))
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lens = ends - starts
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        take = _ranges(starts, lens)
        return sp.csr_matrix((self.values[take], self.indices[take].astype(np.int32), indptr), shape=(len(rows), d_sae))


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), without a Python loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    out = np.ones(total, np.int64)
    ends = np.cumsum(lens)
    nz = lens > 0
    s, l, e = starts[nz], lens[nz], ends[nz]
    out[0] = s[0]
    out[e[:-1]] = s[1:] - (s[:-1] + l[:-1] - 1)
    return np.cumsum(out)


# ----------------------------------------------------------------------------- payload columns


def payload_table(doc_ids: list[str], payloads: list[dict]) -> pa.Table:
    """doc_id + one column per payload field. A field whose values do not share one Arrow type
    is stored as JSON text (marked in the field metadata) so no value is lost."""
    keys: dict[str, None] = {}
    for p in payloads:
        for k in p:
            if k not in NOT_COPIED and k != "doc_id":
                keys[k] = None
    arrays, fields = [pa.array(doc_ids, pa.string())], [pa.field("doc_id", pa.string())]
    for k in keys:
        vals = [p.get(k) for p in payloads]
        try:
            arr = pa.array(vals)
            if pa.types.is_null(arr.type) or pa.types.is_struct(arr.type):
                raise pa.ArrowInvalid("not a filterable type")
            fields.append(pa.field(k, arr.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arr = pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in vals], pa.string())
            fields.append(pa.field(k, pa.string(), metadata={JSON_META: b"1"}))
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def column_values(table: pa.Table, name: str) -> list:
    """A payload column back as Python values (JSON-stored columns decoded; missing -> None)."""
    if name not in table.column_names:
        return [None] * table.num_rows
    vals = table.column(name).to_pylist()
    meta = table.schema.field(name).metadata or {}
    if meta.get(JSON_META):
        return [None if v is None else json.loads(v) for v in vals]
    return vals


def row_mask(table: pa.Table, flt: Filter | None) -> np.ndarray:
    """Which rows satisfy the filter, as Qdrant would answer it (:mod:`indexer.core.filters`);
    evaluated on the columns, vectorised for plain string/int/bool columns."""
    mask = np.ones(table.num_rows, dtype=bool)
    if flt is None or flt.is_empty():
        return mask
    for key, value in flt.equals.items():
        want = wanted(value)
        if key not in table.column_names:
            return np.zeros(table.num_rows, dtype=bool)
        col = table.column(key)
        meta = table.schema.field(key).metadata or {}
        typ = col.type
        kinds = {kind_of(w) for w in want}
        col_kind = _arrow_kind(typ)
        plain = not meta.get(JSON_META)
        if plain and kinds == {"number"} and col_kind in (int, float):
            # numbers by value: an int column may hold a mixed field's ints, a double one ints too
            # (Arrow widens [0, 0.5] to doubles); payload floats are never integral (canonical_number)
            hit = pc.is_in(col.cast(pa.float64()), value_set=pa.array([float(w) for w in want], pa.float64()))
            mask &= np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool) & ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        elif plain and len(kinds) == 1 and col_kind is not None and _KIND_NAME[col_kind] == next(iter(kinds)) and col_kind is not float:
            hit = pc.is_in(col, value_set=pa.array(want, typ)).to_numpy(zero_copy_only=False)
            mask &= np.asarray(hit, dtype=bool) & ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        elif not meta.get(JSON_META) and not (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and _arrow_kind(typ) is not None:
            return np.zeros(table.num_rows, dtype=bool)  # e.g. an int column asked for a string: no match, as in Qdrant
        else:
            vals = column_values(table, key)
            mask &= np.fromiter((value_matches(v, want) for v in vals), dtype=bool, count=len(vals))
    return mask


_KIND_NAME = {bool: "boolean", int: "number", float: "number", str: "string"}


def _arrow_kind(typ: pa.DataType) -> type | None:
    if pa.types.is_boolean(typ):
        return bool
    if pa.types.is_integer(typ):
        return int
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return str
    if pa.types.is_floating(typ):
        return float
    return None


# ----------------------------------------------------------------------------- the copy


class ColumnCopy:
    """Read, append to, merge and rebuild one index's columnar copy of one view.

    A two-view index (prompt -> response) has one copy per view, row for row the same documents
    (a record without a prompt has an empty prompt row): each view's analyses read its copy as
    they read a single-view index, and cross-view ones pair rows by document."""

    def __init__(self, root: Path, d_sae: int, reference: np.ndarray | None = None, view: str = "response"):
        self.root = Path(root)
        self.d_sae = int(d_sae)
        self.reference = reference
        self.view = view
        self.index_dtype = np.uint16 if self.d_sae <= 65536 else np.int32

    # --- state
    def meta(self) -> dict | None:
        p = self.root / "meta.json"
        try:
            return json.loads(p.read_text()) if p.exists() else None
        except (OSError, ValueError):
            return None

    def initialise(self) -> None:
        """An empty, valid copy (for a new index; a rebuild writes its own)."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.root / "meta.json", {"format": FORMAT, "d_sae": self.d_sae, "index_dtype": np.dtype(self.index_dtype).name})

    def invalidate(self) -> None:
        """Mark stale (e.g. before documents are replaced in place): the next reader rebuilds."""
        try:
            (self.root / "meta.json").unlink()
        except FileNotFoundError:
            pass

    def usable(self) -> bool:
        m = self.meta()
        return bool(m) and m.get("format") == FORMAT and m.get("d_sae") == self.d_sae

    def shards(self) -> list[ShardRef]:
        """Live shards in sequence order; leftovers of an interrupted write or merge are removed."""
        if not self.root.exists():
            return []
        refs, junk = [], []
        for p in self.root.iterdir():
            if p.name.startswith("tmp-"):
                junk.append(p)
            elif (r := ShardRef.parse(p)) is not None:
                refs.append(r)
        refs.sort(key=lambda r: (r.first, -r.last))
        live: list[ShardRef] = []
        for r in refs:
            if live and r.last <= live[-1].last:  # covered by a merged shard renamed in before a crash
                junk.append(r.path)
            else:
                live.append(r)
        for p in junk:
            shutil.rmtree(p, ignore_errors=True)
        return live

    def n_rows(self) -> int:
        return sum(r.rows for r in self.shards())

    def is_fresh(self, n_docs: int) -> bool:
        return self.usable() and self.n_rows() == n_docs

    # --- reading
    def load(self, ref: ShardRef, mmap: bool = True, arrays: bool = True) -> Shard:
        """One shard; ``arrays=False`` reads only its row table, order keys and counts (cheap: for
        choosing rows before the vectors are touched - a memory map kept open per shard while
        rows are gathered from all of them once held 5.6 GB resident at 1M documents)."""
        mode = "r" if mmap else None
        try:
            indptr = np.load(ref.path / "indptr.npy", mmap_mode=mode, allow_pickle=False)
            if arrays:
                indices = np.load(ref.path / "indices.npy", mmap_mode=mode, allow_pickle=False)
                values = np.load(ref.path / "values.npy", mmap_mode=mode, allow_pickle=False)
            else:
                indices = values = np.zeros(0, np.float32)
            with pa.memory_map(str(ref.path / "rows.arrow")) as src:
                table = ipc.open_file(src).read_all()
            with np.load(ref.path / "counts.npz", allow_pickle=False) as z:
                counts = {k: z[k] for k in z.files}
            order = np.load(ref.path / "order.npy", allow_pickle=False)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise ColumnCopyError(f"columnar copy shard {ref.path} is unreadable ({e}); delete {self.root} to rebuild it") from None
        return Shard(indptr, indices, values, table, counts, order)

    def iter_shards(self, arrays: bool = True) -> Iterator[Shard]:
        refs = self.shards()
        for n, ref in enumerate(refs):
            checkpoint(n, len(refs))  # where a cancelled analysis job stops
            yield self.load(ref, arrays=arrays)

    # --- writing
    def append(self, doc_ids: list[str], indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, payloads: list[dict],
               merge: bool = True) -> None:
        """Write documents as one new shard (atomically), then merge small shards."""
        if not doc_ids:
            return
        shards = self.shards()
        seq = (shards[-1].last + 1) if shards else 0
        rows = [view_text_payload(p, self.view) for p in payloads]
        self._write_shard(seq, seq, doc_ids, indptr, indices, values, payload_table(doc_ids, rows))
        if merge:
            self._merge_small()

    def append_points(self, points, view: str = "response") -> None:
        """Append :class:`indexer.store.DocPoint` s (what the ingest just upserted into Qdrant)."""
        vecs = [p.view_sparse(view) for p in points]
        lens = np.fromiter((len(v[0]) for v in vecs), np.int64, count=len(points))
        indptr = np.zeros(len(points) + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        idx = np.fromiter((i for v in vecs for i in v[0]), np.int64, count=int(indptr[-1]))
        val = np.fromiter((x for v in vecs for x in v[1]), np.float32, count=int(indptr[-1]))
        self.append([p.doc_id for p in points], indptr, idx, val, [p.payload for p in points])

    def _write_shard(self, first: int, last: int, doc_ids: list[str], indptr, indices, values, table: pa.Table,
                     order: np.ndarray | None = None) -> ShardRef:
        indices = np.asarray(indices)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.d_sae):
            raise ColumnCopyError(f"latent id out of range [0, {self.d_sae}) in a document written to {self.root}")
        tmp = self.root / f"tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(parents=True)
        indptr = np.asarray(indptr, np.int64)
        idx = indices.astype(self.index_dtype)
        val = np.asarray(values, np.float32)
        np.save(tmp / "indptr.npy", indptr)
        np.save(tmp / "indices.npy", idx)
        np.save(tmp / "values.npy", val)
        with pa.OSFile(str(tmp / "rows.arrow"), "wb") as sink, ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        np.savez(tmp / "counts.npz", **self._counts(indptr, idx, val, table))
        np.save(tmp / "order.npy", order_keys(doc_ids) if order is None else np.asarray(order, np.uint64))
        ref = ShardRef(self.root / f"shard-{first:012d}-{last:012d}-{len(doc_ids)}", first, last, len(doc_ids))
        os.rename(tmp, ref.path)
        return ref

    def _counts(self, indptr: np.ndarray, idx: np.ndarray, val: np.ndarray, table: pa.Table) -> dict[str, np.ndarray]:
        """Per dataset: rows, and per latent the documents where it is present at each stored
        floor; the same per dataset and length bucket (sparse). One count per floor serves both:
        a dataset's counts are the sum of its buckets' (plus a bucket for rows with no length)."""
        ds = column_values(table, "dataset")
        names = sorted({str(d) for d in ds if isinstance(d, str)})
        row_ds = np.array([names.index(d) if isinstance(d, str) else -1 for d in ds], np.int64) if names else np.full(len(ds), -1)
        nb, nbx = N_LENGTH_BUCKETS, N_LENGTH_BUCKETS + 1  # the extra bucket: rows without a stored length
        row_b = length_bucket(column_lengths(table))
        row_db = np.where(row_ds >= 0, row_ds * nbx + np.where(row_b >= 0, row_b, nb), -1)
        by_bucket = np.bincount(row_db[row_db >= 0], minlength=len(names) * nbx).reshape(len(names), nbx).astype(np.int64)
        out: dict[str, np.ndarray] = {"datasets": np.array(names, dtype=str), "rows": by_bucket.sum(axis=1),
                                      "len_rows": by_bucket[:, :nb]}
        nnz_db = np.repeat(row_db, np.diff(indptr))
        to_dataset = sp.csr_matrix((np.ones(len(names) * nbx, np.int32), np.arange(len(names) * nbx),
                                    np.arange(len(names) + 1) * nbx), shape=(len(names), len(names) * nbx))
        for f in COUNT_FLOORS:
            if f > 0 and self.reference is None:
                continue
            keep = (nnz_db >= 0) & above_floor(val, idx, self.reference, f)
            stored = _sparse_counts(floor_key(f) + "_len", nnz_db[keep], idx[keep], len(names) * nbx, self.d_sae)
            out.update(stored)
            m = sparse_counts(stored, floor_key(f) + "_len", self.d_sae)
            out[floor_key(f)] = np.asarray((to_dataset @ m).todense(), dtype=np.int32).reshape(len(names), self.d_sae)
        return out

    def _merge_small(self) -> None:
        """Tiered merging: whenever the newest FAN_IN shards are of one size class, merge them."""
        while True:
            shards = self.shards()
            if len(shards) < FAN_IN:
                return
            tail = shards[-FAN_IN:]
            classes = {_size_class(r.rows) for r in tail}
            if len(classes) != 1 or next(iter(classes)) >= _size_class(REBUILD_ROWS):
                return
            self._merge(tail)

    def _merge(self, refs: list[ShardRef]) -> None:
        parts = [self.load(r, mmap=False) for r in refs]
        indptr = [np.zeros(1, np.int64)]
        off = 0
        for p in parts:
            indptr.append(p.indptr[1:] + off)
            off += int(p.indptr[-1])
        table = pa.concat_tables([p.table for p in parts], promote_options="permissive")
        ids = table.column("doc_id").to_pylist()
        self._write_shard(refs[0].first, refs[-1].last, ids, np.concatenate(indptr),
                          np.concatenate([p.indices for p in parts]), np.concatenate([p.values for p in parts]), table,
                          np.concatenate([p.order for p in parts]))
        for r in refs:
            shutil.rmtree(r.path, ignore_errors=True)

    def rebuild(self, hits_batches: Iterable[list], total: int | None = None, progress: bool = True) -> None:
        """Write a complete copy from a scan (hits with ``sparse`` dicts and payloads) into a new
        folder and swap it in: readers never see a half-built copy."""
        from tqdm import tqdm

        staging = self.root.with_name(f".{self.root.name}.rebuild-{uuid.uuid4().hex[:8]}")
        new = ColumnCopy(staging, self.d_sae, self.reference, self.view)
        new.initialise()
        buf_ids: list[str] = []
        buf_pay: list[dict] = []
        buf_idx: list[np.ndarray] = []
        buf_val: list[np.ndarray] = []
        bar = tqdm(total=total, desc="columnar copy", unit="doc", file=sys.stderr, mininterval=1.0, disable=not progress)

        def flush() -> None:
            if buf_ids:
                lens = np.fromiter((len(a) for a in buf_idx), np.int64, count=len(buf_idx))
                indptr = np.zeros(len(lens) + 1, np.int64)
                np.cumsum(lens, out=indptr[1:])
                new.append(list(buf_ids), indptr, np.concatenate(buf_idx), np.concatenate(buf_val), list(buf_pay), merge=False)
                buf_ids.clear(), buf_pay.clear(), buf_idx.clear(), buf_val.clear()

        for hits in _prefetched(hits_batches):
            for h in hits:
                s = h.sparse if h.sparse is not None else SparseMap([], [])
                if not isinstance(s, SparseMap):
                    s = SparseMap(list(s.keys()), list(s.values()))
                idx, val = s.arrays()
                buf_ids.append(h.doc_id)
                buf_idx.append(idx)
                buf_val.append(val)
                buf_pay.append(h.payload)
            bar.update(len(hits))
            if len(buf_ids) >= REBUILD_ROWS:
                flush()
        flush()
        bar.close()
        old = self.root.with_name(f".{self.root.name}.old-{uuid.uuid4().hex[:8]}")
        if self.root.exists():
            os.rename(self.root, old)
        os.rename(staging, self.root)
        shutil.rmtree(old, ignore_errors=True)

    def drop(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class RowLocator:
    """Finds documents' rows in the copy by point id, to read a few activations without Qdrant.

    Why: a search explains its ten hits by the activations of the query's latents in each. Asking
    Qdrant for the hits' whole vectors (~2,900 non-zeros per article) and converting them to
    Python cost ~1.3 ms per search, all of it holding the GIL; here it is a ``searchsorted`` over
    the copy's (memory-mapped) order keys and a gather from one CSR row per hit. Built from a
    snapshot of the shards; a document it does not find is fetched from Qdrant by the caller."""

    def __init__(self, copy: "ColumnCopy"):
        self.d_sae = copy.d_sae
        self.shards = [copy.load(r) for r in copy.shards()]
        keys = [sh.order for sh in self.shards]
        self.n = sum(len(k) for k in keys)
        allkeys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        which = np.concatenate([np.full(len(k), i, np.int32) for i, k in enumerate(keys)]) if keys else np.zeros(0, np.int32)
        rows = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys]) if keys else np.zeros(0, np.int64)
        order = np.argsort(allkeys, kind="stable")
        self.keys, self.which, self.rows = allkeys[order], which[order], rows[order]
        # plain-array views of the memory-mapped columns: slicing an np.memmap builds a memmap
        # object per slice (its __array_finalize__ was ~4% of a search); a view costs nothing
        self._arrays = [(np.asarray(sh.indptr), np.asarray(sh.indices).view(np.ndarray), np.asarray(sh.values).view(np.ndarray))
                        for sh in self.shards]
        self._ids = [sh.table.column("doc_id") for sh in self.shards]

    def vectors(self, doc_ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """doc id -> its SAE vector (latent ids int64, activations float32), for the ids found."""
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if not self.n or not doc_ids:
            return out
        want = order_keys(doc_ids)
        pos = np.searchsorted(self.keys, want)
        for d, k, p in zip(doc_ids, want.tolist(), pos.tolist()):
            while p < self.n and int(self.keys[p]) == k:  # 64-bit key collisions: confirm the id
                i, r = int(self.which[p]), int(self.rows[p])
                if self._ids[i][r].as_py() == d:
                    indptr, indices, values = self._arrays[i]
                    a, b = int(indptr[r]), int(indptr[r + 1])
                    out[d] = (np.asarray(indices[a:b], np.int64), np.asarray(values[a:b], np.float32))
                    break
                p += 1
        return out

    def activations(self, doc_ids: list[str], latents: np.ndarray) -> dict[str, np.ndarray]:
        """doc id -> activation of each of ``latents`` (0 where absent), for the ids found."""
        latents = np.asarray(latents, np.int64)
        out: dict[str, np.ndarray] = {}
        for d, (idx, val) in self.vectors(doc_ids).items():
            dense = np.zeros(self.d_sae, np.float32)
            dense[idx] = val
            out[d] = dense[latents]
        return out


def view_doc_counts(copy: ColumnCopy) -> tuple[int, np.ndarray]:
    """Texts of the copy's view (records, or the records with a prompt) and per latent how many
    it fires in (any activation), from the counts each shard stores: no pass over the non-zeros."""
    key = floor_key(0.0)
    n, counts = 0, np.zeros(copy.d_sae, np.int64)
    for shard in copy.iter_shards(arrays=False):
        counts += shard.counts[key].sum(axis=0).astype(np.int64) if len(shard.counts[key]) else 0
        if copy.view == "response":
            n += int(shard.counts["rows"].sum())
        else:  # a single-view record's prompt row is empty: count the records that have one
            n += int(row_mask(shard.table, Filter({HAS_PROMPT: True})).sum())
    return n, counts


def order_keys(doc_ids: list[str]) -> np.ndarray:
    """Each document's canonical position key: the top 64 bits of its Qdrant point id.

    Analyses and latent statistics order documents by this key, not by when they were written,
    so an index re-created in another order (an import, a rebuild on another machine) gives
    the same examples, samples and tie-breaks - and the same order a Qdrant scroll returns."""
    return np.fromiter((int(point_id(d).replace("-", "")[:16], 16) for d in doc_ids), np.uint64, count=len(doc_ids))


def _prefetched(batches: Iterable[list], depth: int = 2) -> Iterator[list]:
    """Fetch the next scan pages in a thread while this one is converted: on a Qdrant server the
    wait for the network overlaps the work, and the store's native code overlaps Python's."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    failure: list[BaseException] = []

    def pump() -> None:
        try:
            for b in batches:
                q.put(b)
        except BaseException as e:  # noqa: BLE001 - re-raised in the reader's thread
            failure.append(e)
        finally:
            q.put(done)

    threading.Thread(target=pump, daemon=True, name="columns-scan").start()
    while (item := q.get()) is not done:
        yield item
    if failure:
        raise failure[0]


def _size_class(rows: int) -> int:
    c, r = 0, max(rows, 1)
    while r >= 128 * FAN_IN ** (c + 1):
        c += 1
    return c


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- store glue


def copy_for(store, recipe, view: str = "response") -> ColumnCopy:
    """The columnar copy of one view of the index behind ``store`` (not checked for freshness);
    ``recipe`` is the index's :class:`indexer.encode.recipe.Recipe`."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)} (got {view!r})")
    return ColumnCopy(store.cache_file(DIRNAME if view == "response" else f"{DIRNAME}-{view}"), recipe.n_latents,
                      reference_for(recipe), view)


def view_writers(store, replacing: bool) -> dict[str, ColumnCopy]:
    """The copies a writer appends to in step with Qdrant, by view: the response view's, and the
    prompt view's where the index has prompts (each only while fresh: see :func:`writer_for`)."""
    views = VIEWS if read_manifest(store).state.two_view else ("response",)
    return {v: c for v in views if (c := writer_for(store, replacing, v)) is not None}


def writer_for(store, replacing: bool, view: str = "response") -> ColumnCopy | None:
    """The copy a writer (ingest, import) appends to in step with Qdrant, or None when it is
    stale or about to be (documents replaced in place): then the next reader rebuilds it."""
    copy = copy_for(store, read_manifest(store).recipe, view)
    n = store.count()
    if replacing:
        copy.invalidate()
        return None
    if n == 0 and not copy.usable():
        copy.initialise()
    return copy if copy.is_fresh(n) else None


def fresh_copy(store, recipe, progress: bool = True, view: str = "response") -> ColumnCopy:
    """One view's columnar copy, rebuilt from a Qdrant scan first when it is missing or stale."""
    copy = copy_for(store, recipe, view)
    n = store.count()
    if not copy.is_fresh(n):
        if progress:
            print(f"columnar copy{'' if view == 'response' else ' (' + view + 's)'} of "
                  f"{getattr(store, 'name', None) or copy.root.parent.name} is "
                  f"{'stale' if copy.usable() else 'missing'}: rebuilding it from Qdrant ({n:,} documents)", file=sys.stderr)
        copy.rebuild(store.scroll_docs(with_sparse=True, payload_fields=None, batch=2000, view=view), total=n, progress=progress)
        if not copy.is_fresh(store.count()):
            raise ColumnCopyError(f"columnar copy at {copy.root} does not match the index after a rebuild (is another process writing it?)")
    return copy
