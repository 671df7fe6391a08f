"""Ingest edge cases found by probing the CLI as a user would; one regression test each.

Fast ones (no model) first; the ones that index real text share the session's reader.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

from indexer.corpus import CorpusError, ReadStats, read_corpus
from tests.conftest import ROOT, load_bbc, write_jsonl


# ----------------------------------------------------------------------------- corpus reading

def test_integer_ids_become_strings_and_bool_or_float_ids_are_refused(tmp_path):
    p = write_jsonl(tmp_path / "ids.jsonl", [{"id": 1, "text": "one"}, {"id": "2", "text": "two"}])
    stats = ReadStats()
    assert [r.id for r in read_corpus(p, id_field="id", stats=stats)] == ["1", "2"]
    assert stats.ids_normalised == 1
    for bad, shown in ((True, "bool True"), (1.5, "float 1.5")):
        q = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "text": "x"}, {"id": bad, "text": "y"}])
        with pytest.raises(CorpusError, match=rf"bad\.jsonl:2: id field 'id' must be a string or an integer, got {shown}"):
            list(read_corpus(q, id_field="id"))
        stats = ReadStats()
        assert [r.id for r in read_corpus(q, id_field="id", skip_invalid=True, stats=stats)] == ["a"]
        assert stats.invalid == 1


def test_utf8_bom_is_accepted_in_jsonl_and_csv(tmp_path):
    j = tmp_path / "bom.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "a", "text": "hello"}).encode() + b"\n")
    assert [(r.id, r.text) for r in read_corpus(j, id_field="id")] == [("a", "hello")]
    c = tmp_path / "bom.csv"
    c.write_bytes(b"\xef\xbb\xbfid,text\n7,hi there\n")
    assert [(r.id, r.text) for r in read_corpus(c, id_field="id")] == [("7", "hi there")]


def test_skip_invalid_skips_non_utf8_jsonl_lines(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n{"text": "also fine"}\n')
    with pytest.raises(CorpusError, match=r"latin\.jsonl:2: not UTF-8"):
        list(read_corpus(p))
    stats = ReadStats()
    assert [r.text for r in read_corpus(p, skip_invalid=True, stats=stats)] == ["fine", "also fine"]
    assert stats.invalid == 1 and "latin.jsonl:2" in stats.invalid_examples[0]


def test_corrupt_gzip_is_one_line_error(tmp_path):
    good = gzip.compress(("".join(json.dumps({"text": f"doc {i} " * 50}) + "\n" for i in range(200))).encode())
    bad = bytearray(good)
    for i in range(40, len(bad) - 20, 7):  # flip bytes inside the deflate stream, keep header and length
        bad[i] ^= 0x5A
    p = tmp_path / "corrupt.jsonl.gz"
    p.write_bytes(bytes(bad))
    with pytest.raises(CorpusError, match=r"corrupt\.jsonl\.gz: cannot read \(corrupt or truncated gzip"):
        list(read_corpus(p))


def test_csv_fields_longer_than_128_kib_are_read_and_csv_errors_are_one_line(tmp_path, monkeypatch):
    long_text = "word " * 60_000  # 300 KB: a whole long document in one cell
    p = tmp_path / "long.csv"
    p.write_text('id,text\n1,"' + long_text + '"\n')
    assert [len(r.text) for r in read_corpus(p, id_field="id")] == [len(long_text)]
    import indexer.corpus as corpus

    monkeypatch.setattr(corpus, "CSV_FIELD_LIMIT", 1000)
    with pytest.raises(CorpusError, match=r"long\.csv:\d+: invalid CSV \(field larger than field limit"):
        list(read_corpus(p, id_field="id"))


def test_offline_labels_are_identical_across_processes_with_different_hash_seeds():
    code = (
        "import json; from indexer.labels import OfflineLabeller\n"
        "ex = [{'text': t, 'span': [0, 3]} for t in ['cat sat on mat by the red door', 'cat ran to old barn near red tree',"
        " 'cat saw big dog and red ball', 'dog sat on mat by the blue door']]\n"
        "lab = OfflineLabeller(['the cat', 'a dog', 'red door', 'old barn'] * 5)\n"
        "print(json.dumps(lab.label(ex)))\n"
    )
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3, 4)}
    assert len(outs) == 1, outs


# ----------------------------------------------------------------------------- windows

def test_plan_windows_pools_every_token_once_with_context():
    from indexer.reader import plan_windows

    for n in (1, 7, 64, 65, 100, 1000, 4096):
        for window, overlap in ((64, 16), (1024, 128), (10, 0)):
            plan = plan_windows(n, window, overlap)
            pooled = [t for s, e, p in plan for t in range(p, e)]
            assert pooled == list(range(n))
            for k, (s, e, p) in enumerate(plan):
                assert 0 <= s <= p < e <= n and e - s <= window
                if k:
                    assert p - s == overlap  # each later window starts with `overlap` tokens of context
            assert all(e - s == window for s, e, _ in plan[:-1])


def test_old_manifest_is_refused_with_rebuild_hint(tmp_path):
    from indexer.catalog import require_index
    from indexer.manifest import OutdatedIndex
    from indexer.store import open_store

    store = open_store("legacy")
    store.root.mkdir(parents=True)
    (store.root / "docs").mkdir()
    store.write_manifest({"version": 1, "reader": {"model": "gemma3-270m", "layer": 6, "max_tokens": 128}})
    with pytest.raises(OutdatedIndex, match=r"older saedex .*cut at 128 tokens.*saedex drop --index legacy"):
        require_index(store, "legacy")
    store.drop()
