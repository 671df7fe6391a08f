"""Measure an SAE's reference strengths for the noise floor (see :mod:`indexer.encode.floor`).

    python -m indexer.labels.dictionary.reference CORPUS [--sae DIR] [--docs 2000] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from indexer.encode.encoder import Encoder
from indexer.encode.floor import REFERENCE_FILE, compute_reference
from indexer.encode.sae import DEFAULT_SAE_DIR
from indexer.labels.dictionary.collect import read_texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--sae", default=str(DEFAULT_SAE_DIR))
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--skip", type=int, default=20000, help="start after the documents the dictionary was built on")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    texts = []
    for i, t in enumerate(read_texts(args.corpus)):
        if i < args.skip:
            continue
        texts.append(t)
        if len(texts) >= args.docs:
            break
    med, n = compute_reference(Encoder.from_options(args.sae), texts)
    out = args.out or Path(args.sae) / REFERENCE_FILE
    np.save(out, med)
    print(f"wrote {out}: {int((n > 0).sum())} latents with a reference, median support {int(np.median(n[n > 0]))} docs",
          file=sys.stderr)


if __name__ == "__main__":
    main()
