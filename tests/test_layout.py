"""The floor plan holds: imports run one way between the stages, no cycles, no hidden imports;
a built wheel installs and runs on its own; the Dockerfile copies what the package needs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from benchmarks.layout import ALLOWED_LOCAL, RANKS, drawing, modules, stage

ROOT = Path(__file__).resolve().parents[1]


def test_imports_run_one_way_with_no_cycles_and_none_hidden():
    d = drawing()
    assert d["cycles"] == []
    assert d["back_arrows"] == [], "an import runs back up the plan (benchmarks/layout.py RANKS)"
    assert d["local_imports"] == [], f"function-local project imports (defer only heavy optional dependencies: {ALLOWED_LOCAL})"
    assert d["floors"] <= 8
    assert {stage(m) for m in modules()} <= set(RANKS) | {"indexer"}, "a new stage needs its place in the plan"


def test_the_drawing_sees_a_back_arrow_and_a_cycle(tmp_path, monkeypatch):
    """The check can fail: a store module importing search is a back arrow and, with search
    importing the store, a cycle."""
    import benchmarks.layout as L

    for rel, src in {"indexer/__init__.py": "", "indexer/store/__init__.py": "", "indexer/store/a.py": "import search.b\n",
                     "search/__init__.py": "", "search/b.py": "def f():\n    from indexer.store import a\n",
                     "analyses/__init__.py": "", "server/__init__.py": ""}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(src)
    monkeypatch.setattr(L, "ROOT", tmp_path)
    d = L.drawing()
    assert d["back_arrows"] == ["indexer.store.a -> search.b"]
    assert d["cycles"] == [["indexer.store.a", "search.b"]]
    assert d["local_imports"] == ["search/b.py:2: from indexer.store import a"]


def test_dockerfile_copies_every_package_and_the_project_card():
    """No container runtime here: the Dockerfile's COPY lines are checked against the tree."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = set()
    for line in lines:
        m = re.match(r"^COPY\s+(.+)\s+(\S+)$", line.strip())
        if m:
            copied.update(m.group(1).split())
    for src in copied:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the tree"
    for top in ("pyproject.toml", "README.md", "indexer", "search", "analyses", "server"):
        assert top in copied, f"the image lacks {top}"
    cmd = next(line for line in lines if line.startswith("CMD"))
    assert json.loads(cmd[3:].strip())[:2] == ["saedex", "serve"]
    assert any(line.startswith("RUN pip install .") for line in lines)


@pytest.mark.slow
def test_built_wheel_installs_and_runs_on_its_own(tmp_path):
    """Build the wheel, install it (not editable) into a fresh virtualenv that borrows only the
    dependencies, and from there: import every module, `saedex --help`, `saedex info` on an index."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = next(dist.glob("saedex-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("*/**/__init__.py") if p.parts[len(ROOT.parts)] in
                ("indexer", "search", "analyses", "server")}
    assert {f"{p}/__init__.py" for p in packages} <= names
    for data in ("indexer/encode/default_sae/sae_weights.safetensors", "indexer/encode/default_sae/dictionary.npz",
                 "indexer/encode/default_sae/pooling_reference.npy", "indexer/labels/dictionary/taxonomy.tsv",
                 "indexer/encode/concept_sae/sae_weights.safetensors", "indexer/encode/concept_sae/dictionary.npz",
                 "server/static/index.html"):
        assert data in names, data
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    # the dependencies come from this environment's site-packages, added as a plain path: its .pth
    # files (the editable install of this checkout) are not processed, so only the wheel provides saedex
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").exists())
    (site / "deps.pth").write_text(str(deps) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q", str(wheel)]
                   if _pip_has_python_option() else
                   [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "SAEDEX_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}
    py = str(venv / "bin" / "python")
    script = textwrap.dedent("""
        import importlib, pkgutil, indexer
        assert indexer.__file__.startswith(%r), indexer.__file__
        for top in ("indexer", "search", "analyses", "server"):
            m = importlib.import_module(top)
            for info in pkgutil.walk_packages(m.__path__, top + "."):
                importlib.import_module(info.name)
        from indexer.encode.recipe import Recipe, create_manifest
        from indexer.store import DocPoint, open_store
        with open_store("wheel") as s:
            s.create(dense_dim=4, label_dim=4)
            create_manifest(s, Recipe.external(64))
            s.upsert_docs([DocPoint("d1", [1, 5], [0.5, 1.0], [1.0, 0, 0, 0], {"dataset": "a", "text": "one"})])
        print("ok")
    """) % str(site)
    run = lambda *args: subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # noqa: E731
    r = run(py, "-c", script)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
    saedex = str(venv / "bin" / "saedex")
    r = run(saedex, "--help")
    assert r.returncode == 0 and "search" in r.stdout and "diff" in r.stdout, r.stderr[-2000:]
    r = run(saedex, "info", "--index", "wheel", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["documents"] == 1


def _pip_has_python_option() -> bool:
    r = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    major, minor = (int(x) for x in r.stdout.split()[1].split(".")[:2])
    return (major, minor) >= (22, 3)
