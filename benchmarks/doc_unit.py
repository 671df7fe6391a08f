"""Units of the concept family: sentences alone, or sentences plus the whole document? One run.

    python benchmarks/build_eval_index.py            # the dev index, if not built
    python benchmarks/doc_unit.py --index dev [--max-units 8]

The concept family max-pools its SAE over a document's sentences. The issue asked to consider a
whole-document unit for short texts: a joke's or a review's gist may live in no single sentence.
Indexing already embeds every document with MiniLM (the dense baseline vector), so for the MiniLM
concept family a whole-document unit costs one SAE encode. This script measures what it would buy
without rebuilding: the index is exported to Parquet with its dense vectors, each document of 2 to
``--max-units`` sentence units gets its dense vector's concept codes max-pooled in (a new unit
spanning the document, so explanations still point somewhere true), the result is imported as a
second index, and both are evaluated on the dev queries (all, tuning half = odd lines, validation
half = even lines). Writes benchmarks/results/doc_unit.json; the second index is dropped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, write_result  # noqa: E402
from benchmarks.tune_families import halves  # noqa: E402

SAEDEX = [sys.executable, "-m", "server.cli"]


def saedex(*args: str) -> dict:
    out = subprocess.run([*SAEDEX, *args, "--json"], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def add_doc_units(src: Path, dst: Path, max_units: int, d_token: int) -> dict:
    """Copy ``src`` to ``dst`` with a whole-document unit in documents of 2..max_units units."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from indexer.encode.pooling import pack, unpack
    from indexer.encode.sae import shipped_concept_sae

    sae = shipped_concept_sae()
    table = pq.read_table(src)
    rows = table.to_pylist()
    with torch.inference_mode():
        Z = sae.encode(torch.from_numpy(np.array([r["dense"] for r in rows], np.float32))).numpy()
    changed = raised = 0
    for r, z in zip(rows, Z):
        units = unpack(r["_units"], 2) if r["_units"] else np.zeros((0, 2), np.int32)
        if not 2 <= len(units) <= max_units:
            continue
        changed += 1
        value = dict(zip(r["latents"], r["values"]))
        fires = {int(a): int(b) for a, b in (unpack(r["_fires"], 2) if r["_fires"] else [])}
        for j in np.flatnonzero(z > 0):
            latent = d_token + int(j)
            if z[j] > value.get(latent, 0.0):
                value[latent], fires[latent] = float(z[j]), -len(units) - 1  # peak at the new unit
                raised += 1
        r["latents"] = sorted(value)
        r["values"] = [value[k] for k in r["latents"]]
        r["_fires"] = pack(np.array([[k, fires[k]] for k in sorted(fires)], np.int32).reshape(-1))
        r["_units"] = pack(np.vstack([units, [[0, len(r["text"])]]]).astype(np.int32).reshape(-1))
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), dst)
    return {"documents": len(rows), "with_doc_unit": changed, "latent_values_raised": raised}


def map_by_half(evaluation: dict) -> dict:
    """SAE, dense and hybrid MAP over all dev queries and each half (the split tune_families.py uses)."""
    qs = evaluation["queries"]
    out = {}
    for name, part in (("all", qs), *zip(("tuning", "validation"), halves(qs))):
        mean = {m: float(np.mean([q["methods"][m]["ap"] for q in part])) for m in ("sae", "dense", "hybrid")}
        out[name] = {"sae_map": round(mean["sae"], 4), "dense_map": round(mean["dense"], 4),
                     "sae_x_dense": round(mean["sae"] / mean["dense"], 3), "hybrid_x_dense": round(mean["hybrid"] / mean["dense"], 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="dev")
    ap.add_argument("--max-units", type=int, default=8)
    ap.add_argument("--queries", default=str(ROOT / "benchmarks/queries/dev.jsonl"))
    args = ap.parse_args()
    from indexer.encode.sae import load_sae

    d_token = load_sae(None).d_sae
    second = f"{args.index}_docunit"
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "index.parquet", Path(tmp) / "docunit.parquet"
        saedex("export", "--index", args.index, "--parquet", str(src), "--dense")
        made = add_doc_units(src, dst, args.max_units, d_token)
        saedex("import", str(dst), "--index", second)
    try:
        result = {"index": args.index, "max_units": args.max_units, **made, "methods": {}, "per_query": {}}
        for name, ix in (("sentences", args.index), ("sentences + document", second)):
            ev = saedex("eval-retrieval", "--index", ix, "--queries", args.queries, "--family", "all")
            result["methods"][name] = map_by_half(ev)
            result["per_query"][name] = {q["name"]: q["methods"]["sae"]["ap"] for q in ev["queries"]}
    finally:
        saedex("drop", "--index", second)
    write_result("doc_unit", result)


if __name__ == "__main__":
    main()
