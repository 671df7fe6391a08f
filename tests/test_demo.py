"""The demo's own inputs: its diff compares folders that exist in the corpus it writes
(a capitalised folder name once made `make demo` end in "filter B matches 0 documents")."""

from __future__ import annotations

import json

from server.demo import DIFF_A, DIFF_B, demo_jsonl


def test_demo_diff_slices_exist_in_the_demo_corpus():
    rows = [json.loads(l) for l in demo_jsonl(2).read_text(encoding="utf-8").splitlines()]
    folders = {r["folder"] for r in rows}
    assert {DIFF_A, DIFF_B} <= folders, folders
    assert len(rows) == 2 * len(folders) and all(r["text"].strip() and r["id"] for r in rows)
