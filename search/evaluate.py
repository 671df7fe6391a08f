"""Retrieval evaluation: AP, MAP, P@10 and P@50 of every method on labelled property queries.

A queries file is JSONL, one query per line::

  {"name": "sarcastic", "query": "a sarcastic remark", "where": {"dataset": "jokes"},
   "rule": {"field": "tags", "contains": "sarcastic"}}

``relevant`` (a list of doc ids) may replace ``rule``. Rules: ``equals``, ``contains`` (list
fields), ``gte`` / ``lte`` (numbers). ``where`` restricts the candidate pool for every method, so
AP is measured over the same documents for all of them; each method ranks the whole pool.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.core.errors import InputError
from indexer.store import Filter, Store
from search.engine import SearchEngine, SearchOptions
from search.params import MAX_K, METHODS


@dataclass
class QuerySpec:
    name: str
    query: str
    where: dict
    rule: dict | None
    relevant: set[str] | None


def load_queries(path: str | Path) -> list[QuerySpec]:
    out = []
    for n, line in enumerate(Path(path).read_text().split("\n"), 1):  # not splitlines: JSON may hold U+2028
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: invalid JSON ({e.msg})") from None
        if "query" not in d or ("rule" not in d and "relevant" not in d):
            raise InputError(f"{path}:{n}: needs 'query' and one of 'rule' or 'relevant'")
        out.append(QuerySpec(d.get("name", d["query"]), d["query"], d.get("where", {}), d.get("rule"),
                             set(map(str, d["relevant"])) if "relevant" in d else None))
    return out


def matches(rule: dict, payload: dict) -> bool:
    v = payload.get(rule["field"])
    if "equals" in rule:
        return v == rule["equals"]
    if "contains" in rule:
        return isinstance(v, list) and rule["contains"] in v
    if v is None or isinstance(v, (list, dict, str)) and not isinstance(v, (int, float)):
        try:
            v = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
    if "gte" in rule:
        return float(v) >= rule["gte"]
    if "lte" in rule:
        return float(v) <= rule["lte"]
    raise InputError(f"unknown rule {rule}")


def average_precision(ranked: list[str], relevant: set[str]) -> float:
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranked, 1):
        if d in relevant:
            hits += 1
            total += hits / i
    return total / len(relevant)


def precision_at(ranked: list[str], relevant: set[str], k: int) -> float:
    return sum(1 for d in ranked[:k] if d in relevant) / k


def pool_and_relevant(store: Store, q: QuerySpec) -> tuple[set[str], set[str]]:
    pool, rel = set(), set()
    field = q.rule["field"] if q.rule else None
    fields = ["doc_id"] + ([field] if field else [])
    for hits in store.scroll_docs(Filter(dict(q.where)), with_sparse=False, payload_fields=fields, batch=5000):
        for h in hits:
            pool.add(h.doc_id)
            if q.rule and matches(q.rule, h.payload):
                rel.add(h.doc_id)
    if q.relevant is not None:
        rel = q.relevant & pool
    return pool, rel


def evaluate(engine: SearchEngine, queries: list[QuerySpec], methods: list[str] = list(METHODS),
             base: SearchOptions | None = None) -> dict:
    base = base or SearchOptions()
    rows = []
    for q in queries:
        pool, rel = pool_and_relevant(engine.store, q)
        row = {"name": q.name, "query": q.query, "pool": len(pool), "relevant": len(rel),
               "base_rate": round(len(rel) / max(len(pool), 1), 4), "methods": {}}
        for m in methods:
            opts = base.model_copy(update={"method": m, "k": min(max(len(pool), 1), MAX_K), "offset": 0, "where": dict(q.where),
                                           "length_neutral": base.length_neutral and m == "sae",  # an sae option only
                                           "explain": False})
            ranked = [r["id"] for r in engine.search(q.query, opts)["results"]]
            # A method that leaves documents unranked (BM25: no query word) gets them appended in a
            # fixed random order, so every method's AP is over the same full pool.
            seen = set(ranked)
            rest = sorted(pool - seen)
            random.Random(0).shuffle(rest)
            ranked += rest
            row["methods"][m] = {"ap": round(average_precision(ranked, rel), 4), "p@10": precision_at(ranked, rel, 10),
                                 "p@50": precision_at(ranked, rel, 50)}
        rows.append(row)
    summary = {m: {"map": round(float(np.mean([r["methods"][m]["ap"] for r in rows])), 4) if rows else 0.0,
                   "mp@10": round(float(np.mean([r["methods"][m]["p@10"] for r in rows])), 4) if rows else 0.0,
                   "mp@50": round(float(np.mean([r["methods"][m]["p@50"] for r in rows])), 4) if rows else 0.0}
               for m in methods}
    return {"queries": rows, "summary": summary}
