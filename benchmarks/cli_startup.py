"""CLI start-up and a one-off search's wall time: what a user waits for at the prompt.

Each command runs in a fresh process (nothing warm but the OS file cache), ``--runs`` times;
the table reports the median wall seconds. ``--repo`` runs another checkout
with the same Python (the "before"); the first run of each command is a warm-up that is not
counted (it fills the file cache and any cache the checkout keeps on disk).

    python benchmarks/cli_startup.py --index demo                # this checkout
    python benchmarks/cli_startup.py --index demo --repo ../old --label before
Writes benchmarks/results/cli_startup[-LABEL].json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result  # noqa: E402

QUERIES = ["sarcastic remarks about politicians", "a company reports falling profits", "praise for a new film",
           "an injury ends a season", "complaints about slow broadband"]


def run(cmd: list[str], repo: str) -> tuple[float, int]:
    """Wall seconds and exit code of one fresh ``saedex`` process."""
    env = {**os.environ, "PYTHONPATH": repo}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "server.cli", *cmd], cwd=repo, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="demo")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    cases = {"saedex --help": lambda i: ["--help"],
             "search --method sae": lambda i: ["search", QUERIES[i % len(QUERIES)], "--index", args.index, "--k", "10"],
             "search --method dense": lambda i: ["search", QUERIES[i % len(QUERIES)], "--index", args.index, "--k", "10",
                                                 "--method", "dense"]}
    out: dict = {"index": args.index, "repo": os.path.basename(os.path.abspath(args.repo)), "runs": args.runs, "cases": {}}
    for name, make in cases.items():
        run(make(99), args.repo)  # warm-up: file cache, on-disk caches
        walls, codes = [], []
        for i in range(args.runs):
            wall, code = run(make(i), args.repo)
            walls.append(wall)
            codes.append(code)
        out["cases"][name] = {"median_s": round(statistics.median(walls), 2), "all_s": [round(w, 2) for w in walls],
                              "exit_codes": sorted(set(codes))}
        print(f"{name}: median {statistics.median(walls):.2f} s {walls}", file=sys.stderr)
    write_result("cli_startup" + (f"-{args.label}" if args.label else ""), out)


if __name__ == "__main__":
    main()
