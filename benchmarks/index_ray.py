"""Indexing on Ray vs the single-process pipeline, same documents, same run.

    python benchmarks/index_ray.py [--docs 200] [--workers 1,2] [--shard-docs 32]

On the same real documents (BBC articles, whole), indexes into fresh stores:
(1) the single-process pipeline (`saedex index`, every core for torch);
(2) `saedex index --ray local` with 1, then 2 CPU actors of one CPU each (a local Ray instance
    started by the command, as a user would run it on one machine).
For each: docs/s and tokens/s of the whole command's encoding phase, per-worker tokens/s (encode
time inside the actor), and Ray's overhead as a share of the job: start-up (starting Ray) and the
rest of the job wall time that no actor spent encoding (actor model loading, serialisation,
scheduling, shard writes); the import of the shards is reported beside it. Also the agreement of
the Ray-built vectors with the single-process ones (cosine, identical top-10 latents) at the
default precision. Writes benchmarks/results/index_ray.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Timer, real_texts, write_result  # noqa: E402
from benchmarks.index_throughput import agreement  # noqa: E402


def vectors(index: str) -> dict[str, dict]:
    from indexer.store import open_store

    out = {}
    with open_store(index) as store:
        for hits in store.scroll_docs(with_sparse=True, payload_fields=[], batch=1000):
            out.update({h.doc_id: dict(h.sparse) for h in hits})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--shard-docs", type=int, default=32)
    args = ap.parse_args()
    os.environ.setdefault("SAEDEX_MODEL_CACHE", str(Path.home() / ".cache" / "saedex-models"))
    os.environ["SAEDEX_HOME"] = tempfile.mkdtemp(prefix="saedex-bench-")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from indexer.ingest.pipeline import Indexer, index_corpus
    from indexer.ingest.ray_index import RayOptions, index_corpus_ray

    texts, src = real_texts(args.docs)
    corpus = Path(os.environ["SAEDEX_HOME"]) / "bbc.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    res: dict = {"docs": len(texts), "source": src + " (whole articles)", "cpu_count": os.cpu_count(), "shard_docs": args.shard_docs}

    ix = Indexer()
    ix.reader  # models loaded before any clock starts, in both paths (actors load theirs inside the job: counted as overhead)
    with Timer() as t:
        rep = index_corpus(corpus, "single", dataset="bbc", indexer=ix, progress=False)
    res["precision"] = ix.reader.precision
    res["tokens"] = rep.tokens
    res["single_process"] = {"torch_threads": os.cpu_count(), "encode_s": rep.seconds, "tok_s": round(rep.tokens / rep.seconds, 1),
                             "docs_s": round(rep.indexed / rep.seconds, 2), "command_s": round(t.s, 1)}
    ref = vectors("single")

    for n in (int(w) for w in args.workers.split(",")):
        name = f"ray{n}"
        with Timer() as t:
            rep = index_corpus_ray(corpus, name, RayOptions(address="local", workers=n, shard_docs=args.shard_docs),
                                   indexer=ix, dataset="bbc", progress=False)
        ray = rep.ray
        busiest = max(w["encode_s"] for w in ray["per_worker"].values())
        outside = ray["job_s"] - busiest  # job time no actor (the busiest) spent encoding
        res[f"ray_{n}_workers"] = {
            "workers": n, "job_s": ray["job_s"], "startup_s": ray["startup_s"], "import_s": ray["import_s"],
            "tok_s": round(rep.tokens / ray["job_s"], 1), "docs_s": round(rep.indexed / ray["job_s"], 2),
            "tok_s_incl_startup": round(rep.tokens / (ray["job_s"] + ray["startup_s"]), 1),
            "per_worker_tok_s": [w["tokens_per_s"] for w in ray["per_worker"].values()],
            "overhead_share": round((ray["startup_s"] + outside) / (ray["job_s"] + ray["startup_s"]), 3),
            "startup_share": round(ray["startup_s"] / (ray["job_s"] + ray["startup_s"]), 3),
            "command_s": round(t.s, 1), "indexed": rep.indexed,
            "agreement_with_single": agreement([ref[k] for k in sorted(ref)], [v for _, v in sorted(vectors(name).items())]),
        }
        res[f"ray_{n}_workers"]["speedup_vs_single"] = round(res["single_process"]["encode_s"] / ray["job_s"], 2)
    write_result("index_ray", res)


if __name__ == "__main__":
    main()
