"""Indexing cost of the concept family, same run: the whole pipeline (both families) vs the token
family only, with concept units embedded at exact lengths (``PAD_BUCKET`` 1) and in length buckets
of 4 (the default), two rounds on 120 whole BBC articles. Writes
benchmarks/results/concept_unit_padding.json.

    python benchmarks/concept_unit_padding.py [--docs 120 --rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import real_texts, write_result  # noqa: E402
from benchmarks.index_throughput import timed_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ["SAEDEX_HOME"] = tempfile.mkdtemp(prefix="saedex-bench-")
    from indexer.encode import embedder
    from indexer.encode.reader import ReaderConfig
    from indexer.ingest.corpus import Record
    from indexer.ingest.pipeline import Indexer

    texts, src = real_texts(args.docs)
    recs = [Record(str(i), t, {}) for i, t in enumerate(texts)]
    rounds = []
    for r in range(args.rounds):
        _, token_only = timed_pipeline(Indexer(ReaderConfig(), concept=None), recs, f"token{r}")
        row = {"token_only_s": round(token_only, 1)}
        for bucket in (1, 4):
            embedder.PAD_BUCKET = bucket
            _, both = timed_pipeline(Indexer(ReaderConfig()), recs, f"both{bucket}_{r}")
            row[f"both_bucket{bucket}_s"] = round(both, 1)
            row[f"ratio_bucket{bucket}"] = round(both / token_only, 3)
            print(f"round {r}: token only {token_only:.1f} s; both families, PAD_BUCKET {bucket}: {both:.1f} s "
                  f"= {both / token_only:.3f}x", flush=True)
        rounds.append(row)
    write_result("concept_unit_padding", {"docs": len(texts), "source": src, "cpu_count": os.cpu_count(), "rounds": rounds})


if __name__ == "__main__":
    main()
