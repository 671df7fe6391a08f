"""The structure drawing of saedex's imports: floors, arrows that run back up, cycles.

    python -m benchmarks.layout          # the drawing
    python -m benchmarks.layout --json

How it counts. Every ``import`` of a project module is an arrow, function-local ones too (a
cycle hidden in a function is still a cycle). Modules are grouped into the stages of the plan
(``indexer.core``, ``indexer.encode``, ... ``server``); a stage's *floor* is the length of the
longest chain of stages below it, so a stage stands one floor above the highest stage it imports.
An arrow runs *back up* when it goes from a stage to one the plan puts above it (or beside it);
a *cycle* is a strongly connected set of modules. ``tests/test_layout.py`` holds the tree to it.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPS = ("indexer", "search", "analyses", "server")
# The plan: a stage may import only stages of a lower rank (and itself).
RANKS = {"indexer.core": 0, "indexer.encode": 1, "indexer.train": 2, "indexer.store": 2, "indexer.labels": 3,
         "indexer.ingest": 4, "indexer.cli": 5, "search": 5, "analyses": 5, "server": 6}
# Function-local imports of project modules allowed, each deferring a heavy optional dependency.
ALLOWED_LOCAL: dict[str, str] = {}


def modules() -> dict[str, Path]:
    out = {}
    for top in TOPS:
        for p in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = p
    return out


def stage(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "indexer" and len(parts) > 1:
        return "indexer." + parts[1] if "indexer." + parts[1] in RANKS else "indexer"
    return parts[0]


def imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """module -> project modules it imports, and the function-local imports (``file:line: import``)."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    local = []
    for m, p in mods.items():
        tree = ast.parse(p.read_text())
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        top_level = set()
        for node in tree.body:
            top_level |= {id(x) for x in ast.walk(node)} if isinstance(node, (ast.If, ast.Try)) else {id(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            targets = {t for t in map(resolve, names) if t and t != m}
            if not targets:
                continue
            edges[m] |= targets
            if id(node) not in top_level:
                local.append(f"{p.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return edges, local


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]; counter[0] += 1; stack.append(root); on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Floor of each node of an acyclic graph: 0 for one that imports nothing, else one above its highest import."""
    memo: dict[str, int] = {}

    def floor(v: str, seen: tuple = ()) -> int:
        if v not in memo:
            below = [floor(w, seen + (v,)) for w in graph[v] if w not in seen]
            memo[v] = 1 + max(below) if below else 0
        return memo[v]

    for v in graph:
        floor(v)
    return memo


def drawing() -> dict:
    mods = modules()
    edges, local = imports(mods)
    stage_edges: dict[str, set[str]] = {stage(m): set() for m in mods}
    back = []
    for m, ts in edges.items():
        for t in ts:
            a, b = stage(m), stage(t)
            if a == b:
                continue
            stage_edges[a].add(b)
            if RANKS.get(b, 99) >= RANKS.get(a, -1):
                back.append(f"{m} -> {t}")
    stage_floor = floors(stage_edges)
    return {
        "modules": len(mods), "stages": {s: {"floor": stage_floor[s], "imports": sorted(stage_edges[s])}
                                          for s in sorted(stage_edges, key=lambda s: (stage_floor[s], s))},
        "floors": 1 + max(stage_floor.values()), "module_floors": 1 + max(floors(edges).values()),
        "back_arrows": sorted(back), "cycles": cycles(edges),
        "local_imports": [x for x in local if x.split(":")[0] not in ALLOWED_LOCAL],
    }


def main() -> None:
    d = drawing()
    if "--json" in sys.argv:
        print(json.dumps(d, indent=2))
        return
    by_floor: dict[int, list[str]] = {}
    for s, info in d["stages"].items():
        by_floor.setdefault(info["floor"], []).append(s)
    for f in sorted(by_floor, reverse=True):
        print(f"floor {f}: " + "   ".join(f"{s} -> {', '.join(x.removeprefix('indexer.') for x in d['stages'][s]['imports']) or '-'}"
                                          for s in by_floor[f]))
    print(f"{d['floors']} floors of stages ({d['module_floors']} of modules, {d['modules']} modules); "
          f"{len(d['back_arrows'])} arrows back up; {len(d['cycles'])} cycles; {len(d['local_imports'])} function-local project imports")
    for x in d["back_arrows"] + [" <-> ".join(c) for c in d["cycles"]] + d["local_imports"]:
        print("  " + x)


if __name__ == "__main__":
    main()
