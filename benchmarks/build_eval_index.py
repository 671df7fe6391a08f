"""Build the dev retrieval index from ../shared/data (jokes, a Rotten Tomatoes sample, a chit-chat
sample) and run `saedex eval-retrieval` with benchmarks/queries/dev.jsonl.

    python benchmarks/build_eval_index.py [--index dev] [--rt 3000] [--chat 800] [--concept FOLDER]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def sample(name: str, n: int | None, seed: int = 0) -> list[dict]:
    rows = [json.loads(l) for l in (SHARED / name).read_text().split("\n") if l.strip()]
    random.Random(seed).shuffle(rows)
    return rows[:n] if n else rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="dev")
    ap.add_argument("--rt", type=int, default=3000)
    ap.add_argument("--chat", type=int, default=800)
    ap.add_argument("--concept", default="default", help="concept-family SAE (saedex index --concept)")
    args = ap.parse_args()
    if not SHARED.exists():
        sys.exit("../shared/data is not available")
    tmp = Path(tempfile.mkdtemp())
    for ds, rows in (("jokes", sample("jokes.jsonl", None)), ("rt", sample("rotten_tomatoes.jsonl", args.rt)),
                     ("chitchat", sample("chitchat.jsonl", args.chat))):
        p = tmp / f"{ds}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        subprocess.run([sys.executable, "-m", "server.cli", "index", str(p), "--index", args.index, "--dataset", ds,
                        "--id-field", "id", "--skip-invalid", "--concept", args.concept], cwd=ROOT, check=True)
    subprocess.run([sys.executable, "-m", "server.cli", "eval-retrieval", "--index", args.index,
                    "--queries", str(ROOT / "benchmarks" / "queries" / "dev.jsonl")], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
