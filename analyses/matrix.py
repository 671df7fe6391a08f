"""Scan an index slice into a scipy CSR matrix (docs x latents), chunk by chunk.

Never materialises a dense docs x latents matrix: memory grows with the number of non-zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from indexer.core.errors import InputError
from indexer.core.filters import wanted
from indexer.encode.floor import COUNT_FLOORS, above_floor, apply_floor, check_floor, floor_key, reference_for
from indexer.store import Filter, Store, view_filter
from indexer.store.catalog import require_index
from indexer.store.columns import (
    N_LENGTH_BUCKETS,
    ColumnCopy,
    _ranges,
    column_lengths,
    column_values,
    fresh_copy,
    length_bucket,
    row_mask,
    sparse_counts,
)
from indexer.store.latent_table import latent_table


class AnalysisError(InputError):
    """Bad analysis input (empty slice, k too large, unknown field); one-line error."""


@dataclass
class DocMatrix:
    doc_ids: list[str]
    X: sp.csr_matrix  # float32 max activations
    payload: list[dict]  # requested payload fields per doc
    sampled_from: int | None = None  # documents in the slice, when these rows are a sample of it

    @property
    def n_docs(self) -> int:
        return self.X.shape[0]

    def binary(self, threshold: float = 0.0) -> sp.csr_matrix:
        B = (self.X > threshold).astype(np.float32)
        B.eliminate_zeros()
        return B.tocsr()




def require_view(store: Store, index: str, view: str) -> None:
    """A prompt-view analysis of an index without prompts: one line saying how to get them."""
    require_index(store, index).state.require_view(view, index)


# Conditions on a view's latents, resolved to the records that satisfy them: ``prompt-latent=ID``
# (the records whose prompt has latent ID; several ids: any of them), ``no-prompt-latent=ID`` (the
# records with a prompt that lacks it), and the same for responses. With --view response they
# compare the answers to prompts that have a property with those to prompts that do not.
LATENT_KEYS = {"prompt-latent": ("prompt", True), "no-prompt-latent": ("prompt", False),
               "response-latent": ("response", True), "no-response-latent": ("response", False)}


def resolve_latent_conditions(store: Store, index: str, flt: Filter | None, what: str, floor: float,
                              ref: np.ndarray | None) -> Filter | None:
    """``flt`` with its latent conditions (:data:`LATENT_KEYS`) replaced by the ids of the records
    that meet them (among those its other conditions select); a latent is present where it fires
    above the floor, as diff counts it. One pass over each view's copy named."""
    if flt is None or not any(k in LATENT_KEYS for k in flt.equals):
        return flt
    rest = {k: v for k, v in flt.equals.items() if k not in LATENT_KEYS}
    manifest = require_index(store, index)
    ids: set[str] | None = None
    for key, value in flt.equals.items():
        if key not in LATENT_KEYS:
            continue
        view, present = LATENT_KEYS[key]
        manifest.state.require_view(view, index)
        lats = wanted(value)
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < manifest.recipe.n_latents for x in lats):
            raise AnalysisError(f"{what}: {key} takes latent ids (integers 0-{manifest.recipe.n_latents - 1}), got {value!r}")
        want = np.zeros(manifest.recipe.n_latents, bool)
        want[np.asarray(lats, np.int64)] = True
        copy = fresh_copy(store, manifest.recipe, view=view)
        meet: set[str] = set()
        for shard in copy.iter_shards():
            rows = np.flatnonzero(row_mask(shard.table, view_filter(Filter(rest), view)))
            if not len(rows):
                continue
            starts, ends = shard.indptr[rows], shard.indptr[rows + 1]
            take = _ranges(starts, ends - starts)
            idx = np.asarray(shard.indices[take], np.int64)
            hit = want[idx] & above_floor(np.asarray(shard.values[take]), idx, ref, floor)
            has = np.zeros(len(rows), bool)
            has[np.repeat(np.arange(len(rows)), ends - starts)[hit]] = True
            chosen = rows[has if present else ~has]
            ids_col = shard.table.column("doc_id")
            meet.update(ids_col.take(pa.array(chosen)).to_pylist())
        ids = meet if ids is None else ids & meet
    if not ids:
        raise AnalysisError(f"{what} ({flt.describe()}) matches 0 document(s); need at least 1")
    return Filter({**rest, "doc_id": sorted(ids)})


def load_matrix(store: Store, index: str, flt: Filter | None = None, fields: list[str] | None = None,
                with_dense: bool = False, floor: float = 0.0, medians: np.ndarray | None = None,
                max_docs: int = 0, seed: int = 0, positions: np.ndarray | None = None, view: str = "response") -> DocMatrix:
    """The slice's docs x latents matrix, read from the index's columnar copy (rebuilt from Qdrant
    first if it is stale); with ``floor`` > 0, activations below ``floor`` x the latent's reference
    strength are dropped (see :func:`apply_floor`). Pass ``medians`` (from :func:`latent_medians`)
    when loading several slices, to read them once. ``with_dense`` (the dense clustering baseline)
    reads the dense vectors of the slice from Qdrant: the copy holds only what SAE analyses need.
    ``max_docs`` > 0 reads a seeded uniform sample of that many documents when the slice is larger
    (the matrix's ``sampled_from`` says from how many); ``positions`` reads exactly those rows of
    the slice (0-based, in canonical order). Rows come in canonical order (see
    :func:`indexer.store.columns.order_keys`), the order a Qdrant scroll returns. ``view``: the
    prompt view's vectors (of the records that have a prompt) instead of the texts'."""
    check_floor(floor)
    require_view(store, index, view)
    flt = view_filter(flt, view)
    copy = fresh_copy(store, require_index(store, index).recipe, view=view)
    d_sae = copy.d_sae
    ids: list[str] = []
    payloads_cols: dict[str, list] = {f: [] for f in (fields or [])}
    parts = []
    refs = copy.shards()
    shards = [copy.load(r, arrays=False) for r in refs]  # row tables and order keys; vectors one shard at a time below
    selected = [np.flatnonzero(row_mask(sh.table, flt)) for sh in shards]
    canon = canonical_order(shards, selected)
    total = len(canon)
    if 0 < max_docs < total or positions is not None:
        chosen = canon[sample_positions(total, max_docs, seed) if positions is None else np.asarray(positions, np.int64)]
        pick = np.zeros(total, dtype=bool)
        pick[chosen] = True
        pos = 0
        for k, r in enumerate(selected):
            selected[k] = r[pick[pos : pos + len(r)]]
            pos += len(r)
    keys = []
    for ref, rows in zip(refs, selected):
        if len(rows) == 0:
            continue
        shard = copy.load(ref)
        whole = len(rows) == shard.rows
        parts.append(shard.csr(d_sae, None if whole else rows))
        keys.append(shard.order[rows])
        col = shard.table.column("doc_id")
        ids.extend(col.to_pylist() if whole else col.take(pa.array(rows)).to_pylist())
        for f in payloads_cols:
            vals = column_values(shard.table, f)
            payloads_cols[f].extend(vals if whole else [vals[r] for r in rows])
    # Canonical row order (by Qdrant point id), whatever order the documents were written in.
    perm = np.argsort(np.concatenate(keys), kind="stable") if keys else np.zeros(0, np.int64)
    ids = [ids[i] for i in perm]
    payloads_cols = {f: [v[i] for i in perm] for f, v in payloads_cols.items()}
    X = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, d_sae), dtype=np.float32)
    X = sp.csr_matrix(X, dtype=np.float32)[perm] if len(perm) else sp.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    payloads = [{f: payloads_cols[f][r] for f in payloads_cols if payloads_cols[f][r] is not None} for r in range(len(ids))]
    if floor > 0:
        X = apply_floor(X, medians if medians is not None else latent_medians(store, index), floor)
    m = DocMatrix(ids, X, payloads, sampled_from=total)
    if with_dense:
        dense = {}
        for hits in store.scroll_docs(flt=flt, with_sparse=False, with_dense=True, payload_fields=["doc_id"], batch=2000):
            for h in hits:
                dense[h.doc_id] = h.payload.pop("_dense")
        m.dense = np.asarray([dense[d] for d in ids], dtype=np.float32)  # type: ignore[attr-defined]
    return m


def canonical_order(shards: list, selected: list[np.ndarray]) -> np.ndarray:
    """For each canonical position of the slice, its position in copy (write) order."""
    keys = [sh.order[r] for sh, r in zip(shards, selected) if len(r)]
    return np.argsort(np.concatenate(keys), kind="stable") if keys else np.zeros(0, np.int64)


def sample_positions(total: int, size: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of ``size`` of ``total`` slice positions, ascending."""
    return np.sort(np.random.default_rng(seed).choice(total, size, replace=False))


def family_mask(recipe, family: str, n: int) -> np.ndarray:
    """Which of ``n`` latent ids belong to ``family`` (token | concept | all) in an index of ``recipe``."""
    mask = np.zeros(n, bool)
    r = recipe.family_range(family)
    mask[r.start:min(r.stop, n)] = True
    return mask


def latent_medians(store: Store, index: str) -> np.ndarray:
    """Each latent's reference strength for the noise floor: the SAE's own (its median max-pooled
    activation on its training corpus, shipped beside the weights) where it has one - fixed per
    SAE, so counts stored in the columnar copy stay valid as the index grows - else the index's
    median document activation (p50 in latent stats; 0 if unknown)."""
    recipe = require_index(store, index).recipe
    d_sae = recipe.n_latents
    ref = reference_for(recipe)
    if ref is not None:
        return ref
    p50 = np.zeros(d_sae, dtype=np.float32)
    for p in store.get_latents():
        if 0 <= p.latent < d_sae:
            p50[p.latent] = float(p.payload.get("quantiles", {}).get("p50", 0.0))
    return p50


ONE_STRATUM = np.zeros(N_LENGTH_BUCKETS, np.int64)  # every length bucket in one stratum: plain counts


def slice_counts(copy: ColumnCopy, flt: Filter | None, floor: float, ref: np.ndarray | None,
                 threshold: float = 0.0) -> tuple[int, np.ndarray]:
    """Documents in the slice, and per latent how many of them have it (above the floor and the
    threshold): :func:`stratified_counts` with one stratum."""
    n, counts = stratified_counts(copy, flt, ONE_STRATUM, floor, ref, threshold)
    return int(n[0]), counts[0]


def stratified_counts(copy: ColumnCopy, flt: Filter | None, stratum_of: np.ndarray, floor: float, ref: np.ndarray | None,
                      threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per stratum of document length (``stratum_of``: the stratum of each length bucket of
    :data:`LENGTH_EDGES`): documents of the slice (S,) and how many have each latent (S, d_sae),
    streaming over the copy's shards: memory stays one shard whatever the index size.

    A slice defined by ``dataset`` alone at a stored floor is answered from the counts each shard
    keeps - per dataset for one stratum, per dataset and length bucket for several - in
    microseconds per shard instead of a pass over its non-zeros."""
    n_strata = int(stratum_of.max()) + 1
    d = copy.d_sae
    n = np.zeros(n_strata, np.int64)
    counts = np.zeros(n_strata * d, np.int64)
    key = stored_counts_key(flt, floor, ref is not None or floor == 0, threshold)
    want = dataset_values(flt) if key is not None else None  # the datasets a stored-count slice names
    to_strata = np.zeros((n_strata, N_LENGTH_BUCKETS))
    to_strata[stratum_of, np.arange(N_LENGTH_BUCKETS)] = 1.0  # (S, buckets) one-hot
    nb, nbx = N_LENGTH_BUCKETS, N_LENGTH_BUCKETS + 1  # stored per dataset: its buckets, then rows without a length
    for shard in copy.iter_shards():
        if key is not None and key in shard.counts:
            by_bucket = sparse_counts(shard.counts, f"{key}_len", d) if n_strata > 1 else None
            complete = by_bucket is not None and np.array_equal(shard.counts["len_rows"].sum(axis=1), shard.counts["rows"])
            if n_strata == 1 or complete:
                for j, ds in enumerate(shard.counts["datasets"].tolist()):
                    if want is not None and ds not in want:
                        continue
                    if n_strata == 1:
                        n[0] += int(shard.counts["rows"][j])
                        counts += shard.counts[key][j]
                    else:
                        n += (to_strata @ shard.counts["len_rows"][j]).astype(np.int64)
                        counts += np.asarray(by_bucket[j * nbx : j * nbx + nb].T @ to_strata.T).T.astype(np.int64).ravel()
                continue
        rows = np.flatnonzero(row_mask(shard.table, flt))
        if not len(rows):
            continue
        stratum = (stratum_of[length_bucket(column_lengths(shard.table)[rows])] if n_strata > 1
                   else np.zeros(len(rows), np.int64))
        n += np.bincount(stratum, minlength=n_strata)
        starts, ends = shard.indptr[rows], shard.indptr[rows + 1]
        take = _ranges(starts, ends - starts)
        idx, val = shard.indices[take], shard.values[take]
        row_stratum = np.repeat(stratum, ends - starts)
        keep = above_floor(val, idx, ref, floor, threshold)
        counts += np.bincount(row_stratum[keep] * d + idx[keep].astype(np.int64), minlength=n_strata * d)
    return n, counts.reshape(n_strata, d).astype(np.float64)


def dataset_values(flt: Filter | None) -> set[str] | None:
    if flt is None or flt.is_empty():
        return None
    v = flt.equals["dataset"]
    return set(v) if isinstance(v, (list, tuple, set)) else {v}


def stored_counts_key(flt: Filter | None, floor: float, has_ref: bool, threshold: float) -> str | None:
    """The per-shard count array that answers this slice exactly, if any."""
    if threshold != 0 or floor not in COUNT_FLOORS or not has_ref:
        return None
    if flt is not None and not flt.is_empty():
        if set(flt.equals) != {"dataset"}:
            return None
        vals = dataset_values(flt)
        if not vals or not all(isinstance(x, str) for x in vals):
            return None
    return floor_key(floor)


INTERNAL_COLUMNS = frozenset({"doc_id", "content_hash"})


def known_fields(copy: ColumnCopy) -> list[str]:
    """The payload fields some document of the index has (what a filter can name)."""
    names: set[str] = set()
    for shard in copy.iter_shards(arrays=False):
        names.update(shard.table.column_names)
    return sorted(names - INTERNAL_COLUMNS)


def check_fields(store: Store, index: str, flt: Filter | None, name: str) -> None:
    """A filter naming a field no document has is a typo, not an empty slice: say which fields exist."""
    if flt is None or flt.is_empty():
        return
    copy = fresh_copy(store, require_index(store, index).recipe)
    known = known_fields(copy)
    unknown = [k for k in flt.equals if k not in known and k not in LATENT_KEYS]
    if unknown:
        raise AnalysisError(f"{name}: no document has a field {unknown[0]!r} (fields: {', '.join(known) or 'none'})")


def check_bound(name: str, value: int, lo: int, hi: int) -> None:
    """Cost bounds every caller (CLI, API, library) hits the same way, with a one-line message."""
    if not lo <= value <= hi:
        raise AnalysisError(f"{name} must be between {lo} and {hi} (got {value})")


def require_docs(m: DocMatrix, what: str, minimum: int = 1) -> None:
    if m.n_docs < minimum:
        raise AnalysisError(f"{what} matches {m.n_docs} document(s); need at least {minimum}")


def latent_cards(store: Store, ids: list[int]) -> dict[int, dict]:
    """Label, kind (concept | lexical), label quality and SAE family of each latent, for analysis tables.

    Read from the index's in-memory latent table, not from the latents' Qdrant payloads: those
    carry 20 examples each, and converting a few hundred of them held the GIL for ~300 ms at a
    time - a search or ``/healthz`` next to an analysis job waited that long."""
    if not ids:
        return {}
    metas = latent_table(store).metas(sorted(set(int(i) for i in ids)))
    return {i: {"label": m["label"], "kind": m["kind"], "quality": m["quality"], "family": m["family"]} for i, m in metas.items()}

