"""Corpus reading: formats, ids, and the bad-input policy (clear errors, counted skips, no silent loss)."""

from __future__ import annotations

import gzip
import json

import pytest

from indexer.core.errors import InputError
from indexer.ingest.corpus import CorpusError, ReadStats, content_id, read_corpus


def test_jsonl_reads_fields_and_content_hash_ids(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"text": "hello there", "label": "x", "n": 3}) + "\n\n" + json.dumps({"text": "second"}) + "\n")
    recs = list(read_corpus(p))
    assert [r.text for r in recs] == ["hello there", "second"]
    assert recs[0].id == content_id("hello there")
    assert recs[0].fields == {"label": "x", "n": 3}


def test_broken_line_names_file_and_line(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text('{"text": "ok"}\n{"text": "broken"\n{"text": "fine"}\n')
    with pytest.raises(CorpusError, match=r"b\.jsonl:2: invalid JSON"):
        list(read_corpus(p))


def test_skip_invalid_counts_and_keeps_the_rest(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\n{"text": "broken"\n[1,2]\n{"other": 1}\n{"text": "   "}\n{"text": "fine"}\n')
    stats = ReadStats()
    recs = list(read_corpus(p, skip_invalid=True, stats=stats))
    assert [r.text for r in recs] == ["ok", "fine"]
    assert (stats.invalid, stats.empty, stats.read) == (3, 1, 2)


def test_missing_text_field_is_named(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"body": "x"}\n')
    with pytest.raises(CorpusError, match=r"d\.jsonl:1: missing text field 'text'"):
        list(read_corpus(p))
    assert [r.text for r in read_corpus(p, text_field="body")] == ["x"]


def test_non_utf8_reports_byte_offset(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"e\.jsonl:2: not UTF-8 at byte offset 30"):
        list(read_corpus(p))


def test_gzip_csv_parquet_and_txt_folder(tmp_path):
    gz = tmp_path / "f.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps({"id": "a1", "text": "gz text"}) + "\n")
    assert [(r.id, r.text) for r in read_corpus(gz, id_field="id")] == [("a1", "gz text")]

    csv_p = tmp_path / "g.csv"
    csv_p.write_text('id,text,genre\n1,"a, quoted, text",news\n2,plain,fiction\n')
    recs = list(read_corpus(csv_p, id_field="id"))
    assert [(r.id, r.text, r.fields["genre"]) for r in recs] == [("1", "a, quoted, text", "news"), ("2", "plain", "fiction")]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["p one", "p two"], "score": [1, 2]}), tmp_path / "h.parquet")
    assert [r.fields["score"] for r in read_corpus(tmp_path / "h.parquet")] == [1, 2]

    folder = tmp_path / "txt"
    (folder / "sport").mkdir(parents=True)
    (folder / "sport" / "1.txt").write_text("a match report")
    (folder / "top.txt").write_text("top level")
    (folder / "sport" / "bad.txt").write_bytes(b"\xff\xfe broken")
    with pytest.raises(CorpusError, match="bad.txt: not UTF-8 at byte offset 0"):
        list(read_corpus(folder))
    stats = ReadStats()
    recs = list(read_corpus(folder, skip_invalid=True, stats=stats))
    assert sorted((r.id, r.fields["folder"]) for r in recs) == [("sport/1.txt", "sport"), ("top.txt", "")]
    assert stats.invalid == 1


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(CorpusError, match="unknown format"):
        list(read_corpus(tmp_path / "x.xml"))
    with pytest.raises(CorpusError, match="no such file"):
        list(read_corpus(tmp_path / "missing.jsonl"))


def test_repeated_ids_keep_one_copy_and_report_the_ones_that_differ(tmp_path):
    from indexer.ingest.pipeline import IndexReport, collect_records

    p = tmp_path / "dup.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"id": "x1", "text": "hello there", "task": "a"}, {"id": "x2", "text": "another"},
        {"id": "x1", "text": "hello there", "task": "c"}, {"id": "x2", "text": "another"},
        {"id": "x1", "text": "hello again", "task": "a"}]) + "\n")
    rep = IndexReport("i", "d")
    recs = collect_records(p, "text", "id", False, rep)
    assert [(r.id, r.text, r.fields) for r in recs] == [("x1", "hello there", {"task": "a"}), ("x2", "another", {})]
    assert (rep.duplicates_in_input, rep.duplicates_conflicting) == (3, 2)
    assert rep.duplicate_examples == [f"id 'x1': {p}:3 differs from {p}:1 (kept) in task", f"id 'x1': {p}:5 differs from {p}:1 (kept) in text"]
    rep = IndexReport("i", "d")
    recs = collect_records(p, "text", "id", False, rep, keep="last")
    assert [(r.id, r.text, r.fields) for r in recs] == [("x1", "hello again", {"task": "a"}), ("x2", "another", {})]
    with pytest.raises(InputError, match="--keep must be first or last"):
        collect_records(p, "text", "id", False, IndexReport("i", "d"), keep="middle")
