"""Time and peak memory of diff, NPMI correlations and clustering at 100k and 1M documents, each
against the same computation done by plain scipy on an in-memory CSR of the same data, in the
same run (the practical limit: no storage, no payload, no filters to evaluate).

    python benchmarks/analyses.py [--sizes 100000,1000000] [--nnz 1542] [--qdrant-max 100000]

Synthetic vectors of the real index's shape: ~1,542 non-zeros per document (the issue's
measurement; whole BBC articles have ~2,960, the mixed dev index ~765), Zipf-like latent
popularity (the most popular latents are in nearly every document, as real ones are), document
lengths spread +-30%, log-normal strengths, two datasets and a ten-valued ``topic`` field. Up to ``--qdrant-max`` documents are written to
Qdrant Edge through the ingest path (Qdrant upsert, then the columnar copy), and the first-time
rebuild of the copy from a Qdrant scan is timed. Larger sizes write only the columnar copy (an Edge
write of 1.5 billion non-zeros would take hours here); the analyses then read the copy exactly as
they would for a served index, and their example lookups hit an empty Qdrant.

Each analysis runs in a fresh subprocess so its peak RSS is its own (ru_maxrss of the child).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_result  # noqa: E402

D_SAE = 16384


def inclusion_rates(nnz: int, pop: np.ndarray) -> np.ndarray:
    """Per-latent probability of being non-zero in a document, Zipf-shaped, summing to ``nnz``."""
    lo, hi = 0.0, 1e9
    for _ in range(100):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(1.0, c * pop).sum() < nnz else (lo, c)
    return np.minimum(1.0, lo * pop)


def synth_block(n: int, rates: np.ndarray, rng: np.random.Generator, sub: int = 2048):
    """CSR arrays for ``n`` documents: latent j is non-zero in document i with probability
    min(1, length_i x rates_j) (length_i ~ N(1, 0.3): short and long documents), strengths
    log-normal. Vectorised Bernoulli draws, already in CSR order: no de-duplication pass."""
    indptr = [np.zeros(1, np.int64)]
    lat_parts, lengths, total = [], [], 0
    for s in range(0, n, sub):
        m = min(sub, n - s)
        length = np.clip(rng.normal(1.0, 0.3, size=(m, 1)), 0.05, None).astype(np.float32)
        lengths.append(length[:, 0])
        hit = rng.random((m, len(rates)), dtype=np.float32) < np.minimum(1.0, length * rates[None, :].astype(np.float32))
        rows, cols = np.nonzero(hit)
        counts = np.bincount(rows, minlength=m)
        indptr.append(total + np.cumsum(counts))
        total += int(counts.sum())
        lat_parts.append(cols.astype(np.int32))
    lat = np.concatenate(lat_parts)
    vals = rng.lognormal(0.5, 0.6, size=len(lat)).astype(np.float32)
    return np.concatenate(indptr), lat, vals, np.concatenate(lengths)


def build(n: int, nnz: int, qdrant_max: int, home: str) -> dict:
    os.environ["SAEDEX_HOME"] = home
    from indexer.store.columns import REBUILD_ROWS, copy_for
    from indexer.store.catalog import add_dataset
    from indexer.encode.recipe import Recipe, create_manifest
    from indexer.store import DocPoint, LatentPoint, open_store

    rng = np.random.default_rng(0)
    pop = 1.0 / np.arange(1, D_SAE + 1) ** 0.9
    pop /= pop.sum()
    rates = inclusion_rates(nnz, pop[rng.permutation(D_SAE)])
    name = f"a{n}"
    store = open_store(name)
    store.create(dense_dim=4, label_dim=8)
    # The SAE's reference strengths for the noise floor: the synthetic strengths' true median.
    sae_dir = Path(home) / "sae"
    sae_dir.mkdir(exist_ok=True)
    np.save(sae_dir / "pooling_reference.npy", np.full(D_SAE, np.exp(0.5), np.float32))
    recipe = Recipe.external(D_SAE, str(sae_dir))
    create_manifest(store, recipe)
    for name_ in ("A", "B"):
        add_dataset(store, name_)
    copy = copy_for(store, recipe)
    copy.initialise()
    via_qdrant = n <= qdrant_max
    info = {"via_qdrant": via_qdrant, "nnz": 0}
    t0 = time.time()
    block = REBUILD_ROWS
    for s in range(0, n, block):
        m = min(block, n - s)
        indptr, lat, vals, lengths = synth_block(m, rates, rng)
        info["nnz"] += int(indptr[-1])
        ids = [str(s + i) for i in range(m)]
        payloads = [{"dataset": "A" if (s + i) % 2 else "B", "topic": f"t{(s + i) % 10}", "n_tokens": int(300 * lengths[i])}
                    for i in range(m)]
        if via_qdrant:
            for c in range(0, m, 2000):
                pts = [DocPoint(ids[i], lat[indptr[i]:indptr[i + 1]].tolist(), vals[indptr[i]:indptr[i + 1]].tolist(),
                                rng.normal(size=4).tolist(), payloads[i]) for i in range(c, min(c + 2000, m))]
                store.upsert_docs(pts)
        copy.append(ids, indptr, lat, vals, payloads, merge=False)
        print(f"built {s + m:,}/{n:,} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    info["write_s"] = round(time.time() - t0, 1)
    lv = rng.normal(size=(D_SAE, 8)).astype(np.float32)
    store.upsert_latents([LatentPoint(i, lv[i].tolist(), lv[i].tolist(), {"label": f"latent {i}"}) for i in range(D_SAE)])
    store.close()
    return info


CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
os.environ["SAEDEX_HOME"] = {home!r}
import numpy as np
from indexer.store import EdgeStore, Filter, open_store
from analyses.params import ClusterParams, CorrelationsParams, DiffParams
from indexer.store.columns import copy_for
from indexer.encode.recipe import read_manifest
what, n, via_qdrant = {what!r}, {n}, {via_qdrant}
length = "none" if what.endswith("_raw") else "stratified"  # diff_raw: without the length correction
what = what[: -len("_raw")] if what.endswith("_raw") else what
store = open_store(f"a{{n}}")
if not via_qdrant:  # only the columnar copy holds documents: count what it holds
    rows = copy_for(store, read_manifest(store).recipe).n_rows()
    store.count = lambda flt=None: rows
import analyses.diff, analyses.correlations, analyses.clustering, indexer.store.columns  # imports are not the analysis
# Open the store first, as the server holds it: loading Qdrant Edge's segments is a per-process
# cost (reported as open_s), not the analysis's.
t = time.perf_counter()
store.count()
store.get_latents([0])
open_s = time.perf_counter() - t
rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
if what == "rebuild":
    import shutil
    from indexer.store.columns import fresh_copy
    copy = copy_for(store, read_manifest(store).recipe); copy.invalidate()
    t = time.perf_counter()
    fresh_copy(store, read_manifest(store).recipe, progress=False)
elif what == "diff":
    from analyses.diff import diff
    out = diff(store, f"a{{n}}", DiffParams(a={{"dataset": "A"}}, b={{"dataset": "B"}}, top=20, length=length))
elif what == "diff_topic":
    from analyses.diff import diff
    out = diff(store, f"a{{n}}", DiffParams(a={{"topic": "t1"}}, b={{"topic": "t2"}}, top=20, length=length))
elif what == "npmi":
    from analyses.correlations import correlations
    out = correlations(store, f"a{{n}}", CorrelationsParams(min_support=5, top=20, max_label_sim=1.0))
elif what == "cluster":
    from analyses.clustering import cluster
    out = cluster(store, f"a{{n}}", ClusterParams(k=5))
secs = time.perf_counter() - t
if what.startswith("scipy_"):
    from benchmarks.analyses import scipy_baseline
    secs = scipy_baseline(store, what[6:], n)
print(json.dumps({{"seconds": round(secs, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "open_s": round(open_s, 2), "rss_after_open_mb": round(rss_open, 1)}}))
"""


def scipy_baseline(store, what: str, n: int) -> float:
    """The same arithmetic as the analysis on one in-memory CSR of the whole index (int32
    indices, float32 values), built before the clock starts: no storage, no filters to evaluate,
    no payload. Returns the seconds of the computation alone."""
    import scipy.sparse as sp

    from analyses.clustering import MAX_SPECTRAL_DOCS, _spectral
    from analyses.correlations import npmi_pairs, salient_binary
    from analyses.matrix import latent_medians
    from indexer.store.columns import copy_for
    from indexer.encode.recipe import read_manifest

    name = f"a{n}"
    copy = copy_for(store, read_manifest(store).recipe)
    parts, ds = [], []
    for sh in copy.iter_shards():
        parts.append(sh.csr(D_SAE).copy())
        ds.extend(sh.table.column("dataset").to_pylist())
    X = sp.vstack(parts, format="csr")
    del parts
    is_a = np.array([d == "A" for d in ds])
    ref = latent_medians(store, name)
    t = time.perf_counter()
    X.data[X.data < 0.5 * ref[X.indices]] = 0  # the analyses' default noise floor
    X.eliminate_zeros()
    if what == "diff":
        ca = np.asarray((X[is_a] > 0).sum(axis=0)).ravel()
        cb = np.asarray((X[~is_a] > 0).sum(axis=0)).ravel()
        _ = ca / is_a.sum() - cb / (~is_a).sum()
    elif what == "npmi":  # on the same seeded sample the analysis reads (its default max_docs)
        from analyses.correlations import DEFAULT_MAX_DOCS
        from analyses.matrix import sample_positions

        if X.shape[0] > DEFAULT_MAX_DOCS:
            X = X[sample_positions(X.shape[0], DEFAULT_MAX_DOCS, 0)]
        counts = np.diff(X.tocsc().indptr)
        cols = np.flatnonzero((counts <= 0.5 * X.shape[0]) & (counts >= 5))
        B = salient_binary(X[:, cols].tocsr(), 512)
        npmi_pairs(B, 5, 0.3)
    elif what == "cluster":
        B = (X > 0).astype(np.float32).tocsr()
        freq = np.asarray(B.sum(axis=0)).ravel() / B.shape[0]
        cols = np.flatnonzero((freq >= 0.005) & (freq <= 0.5))
        fit = np.sort(np.random.default_rng(0).choice(B.shape[0], MAX_SPECTRAL_DOCS, replace=False))
        pred = _spectral(B[:, cols].tocsr(), fit, 5, 0)
        for c in range(5):
            _ = np.asarray(B[pred == c].sum(axis=0)).ravel()
    return time.perf_counter() - t


def run_child(what: str, n: int, via_qdrant: bool, home: str) -> dict:
    code = CHILD.format(root=str(ROOT), home=home, what=what, n=n, via_qdrant=via_qdrant)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--nnz", type=int, default=1542)
    ap.add_argument("--qdrant-max", type=int, default=100000)
    ap.add_argument("--only", default="rebuild,diff,diff_topic,npmi,cluster,scipy_diff,scipy_npmi,scipy_cluster")
    ap.add_argument("--home", default=None, help="reuse a folder built by an earlier run")
    ap.add_argument("--baseline-max", type=int, default=100000,
                    help="run the in-memory scipy baselines only up to this size (1M would need ~12 GB for the CSR alone)")
    args = ap.parse_args()
    home = args.home or tempfile.mkdtemp(prefix="saedex-bench-")
    res = {"nnz_mean": args.nnz, "d_sae": D_SAE, "cpus": os.cpu_count(), "sizes": {}}
    for n in [int(s) for s in args.sizes.split(",")]:
        via_qdrant = n <= args.qdrant_max
        marker = Path(home) / f"built-{n}.json"
        if marker.exists():
            info = json.loads(marker.read_text())
        else:
            info = build(n, args.nnz, args.qdrant_max, home)
            marker.write_text(json.dumps(info))
        row = dict(info)
        for what in args.only.split(","):
            if (what == "rebuild" and not via_qdrant) or (what.startswith("scipy_") and n > args.baseline_max):
                continue
            row[what] = run_child(what, n, via_qdrant, home)
            print(n, what, row[what], flush=True)
        res["sizes"][n] = row
    write_result("analyses", res)


if __name__ == "__main__":
    main()
