"""Time and peak memory of diff, NPMI correlations and clustering at 10k and 100k documents.

    python benchmarks/analyses.py [--sizes 10000,100000] [--nnz 400]

Synthetic sparse vectors of the real index's shape (see search_latency.py) are written to a
Qdrant Edge index, then each analysis runs end to end through the same code as the CLI
(scan -> CSR -> statistics). Peak memory is the growth of the process's peak RSS during the
analysis, reported next to the number of non-zeros and next to what a dense docs x latents
float32 matrix would need.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result, Timer  # noqa: E402
from benchmarks.search_latency import synth_docs  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--nnz", type=int, default=400)
    ap.add_argument("--d-sae", type=int, default=16384)
    args = ap.parse_args()
    os.environ["SAEDEX_HOME"] = tempfile.mkdtemp(prefix="saedex-bench-")
    from analyses.clustering import cluster
    from analyses.correlations import correlations
    from analyses.diff import diff
    from indexer.store import DocPoint, Filter, LatentPoint, open_store

    rng = np.random.default_rng(0)
    res = {"nnz_mean": args.nnz, "d_sae": args.d_sae, "sizes": {}}
    for n in [int(s) for s in args.sizes.split(",")]:
        name = f"a{n}"
        store = open_store(name)
        store.create(dense_dim=4, label_dim=8)
        store.write_manifest({"sae": {"d_sae": args.d_sae}, "reader": {}, "datasets": ["A", "B"]})
        batch, nnz = [], 0
        for i, (ids, vals) in enumerate(synth_docs(n, args.d_sae, args.nnz, rng)):
            nnz += len(ids)
            batch.append(DocPoint(str(i), ids, vals, rng.normal(size=4).tolist(), {"dataset": "A" if i % 2 else "B"}))
            if len(batch) == 2000:
                store.upsert_docs(batch)
                batch = []
        if batch:
            store.upsert_docs(batch)
        lv = rng.normal(size=(args.d_sae, 8)).astype(np.float32)
        store.upsert_latents([LatentPoint(i, lv[i].tolist(), lv[i].tolist(), {"label": f"latent {i}"}) for i in range(args.d_sae)])
        row = {"nnz": nnz, "dense_matrix_mb": round(n * args.d_sae * 4 / 2**20, 1)}
        for what, fn in (
            ("diff", lambda: diff(store, name, Filter({"dataset": "A"}), Filter({"dataset": "B"}), top=20)),
            ("npmi", lambda: correlations(store, name, min_support=5, top=20)),
            ("cluster", lambda: cluster(store, name, k=5)),
        ):
            before = rss_mb()
            with Timer() as t:
                fn()
            row[what] = {"seconds": round(t.s, 2), "peak_rss_growth_mb": round(rss_mb() - before, 1)}
            print(n, what, row[what], flush=True)
        res["sizes"][n] = row
        store.close()
    write_result("analyses", res)


if __name__ == "__main__":
    main()
