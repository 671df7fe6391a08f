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

from indexer.ingest.corpus import CorpusError, ReadStats, read_corpus
from indexer.ingest.pipeline import IndexReport
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
    import indexer.ingest.corpus as corpus

    monkeypatch.setattr(corpus, "CSV_FIELD_LIMIT", 1000)
    with pytest.raises(CorpusError, match=r"long\.csv:\d+: invalid CSV \(field larger than field limit"):
        list(read_corpus(p, id_field="id"))


def test_offline_labels_are_identical_across_processes_with_different_hash_seeds():
    code = (
        "import json; from indexer.labels.offline import OfflineLabeller\n"
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
    from indexer.encode.reader import plan_windows

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
    from indexer.store.catalog import require_index
    from indexer.encode.recipe import OutdatedIndex
    from indexer.store import open_store

    store = open_store("legacy")
    store.root.mkdir(parents=True)
    (store.root / "docs").mkdir()
    store.write_manifest({"version": 1, "reader": {"model": "gemma3-270m", "layer": 6, "max_tokens": 128}})
    with pytest.raises(OutdatedIndex, match=r"older saedex .*cut at 128 tokens.*saedex drop --index legacy"):
        require_index(store, "legacy")
    store.drop()


# ----------------------------------------------------------------------------- with the real reader

def _cli(*args: str):
    from tests.conftest import cli

    return cli(*args)


def test_changed_text_is_reported_and_update_replaces_it(indexer_obj, tmp_path):
    from indexer.ingest.pipeline import index_corpus
    from indexer.store import open_store

    rows = [{"id": f"d{i}", "text": r["text"][:400]} for i, r in enumerate(load_bbc(1, seed=11))]  # 5 docs
    p = write_jsonl(tmp_path / "v1.jsonl", rows)
    assert index_corpus(p, "upd", dataset="d", id_field="id", indexer=indexer_obj, progress=False).indexed == 5
    rows[2]["text"] = "A completely different text about chess openings and endgames."
    p2 = write_jsonl(tmp_path / "v2.jsonl", rows)
    r = _cli("index", str(p2), "--index", "upd", "--dataset", "d", "--id-field", "id", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert (rep["indexed"], rep["already_indexed"], rep["changed"], rep["updated"]) == (0, 4, 1, 0)
    assert "--update" in r.stderr
    with open_store("upd") as s:
        assert "chess" not in s.get_docs(["d2"])[0].payload["text"]
    r = _cli("index", str(p2), "--index", "upd", "--dataset", "d", "--id-field", "id", "--update", "--json", "--quiet")
    rep = json.loads(r.stdout)
    assert (rep["indexed"], rep["changed"], rep["updated"]) == (0, 1, 1), rep
    with open_store("upd") as s:
        assert s.count() == 5
        hit = s.get_docs(["d2"], with_sparse=True)[0]
        assert "chess" in hit.payload["text"] and hit.payload["n_tokens"] < 20
        assert s.read_manifest()["latent_stats_docs"] == 5
    info = json.loads(_cli("info", "--index", "upd", "--json").stdout)
    assert info["latent_stats"] == {"documents": 5, "documents_covered": 5, "stale": False}
    r = _cli("index", str(p2), "--index", "upd", "--dataset", "d", "--id-field", "id", "--json", "--quiet")
    assert json.loads(r.stdout)["changed"] == 0  # the replacement is now the indexed version


def test_invalid_layer_fails_before_anything_is_written(tmp_path):
    p = write_jsonl(tmp_path / "one.jsonl", [{"id": "x", "text": "Some text to read."}])
    r = _cli("index", str(p), "--index", "badlayer", "--layer", "0", "--json")
    assert r.exit_code == 2 and "--layer must be >= 1" in r.output
    r = _cli("index", str(p), "--index", "badlayer", "--layer", "30", "--json")
    assert r.exit_code == 2 and "layer 30 out of range" in r.output and "Traceback" not in r.output
    assert "badlayer" not in json.loads(_cli("indexes", "--json").stdout)["indexes"]
    assert _cli("info", "--index", "badlayer", "--json").exit_code == 2


def test_second_writer_is_refused_and_leaves_no_phantom_dataset(indexer_obj, tmp_path):
    from indexer.ingest.pipeline import index_corpus
    from indexer.store import IndexLocked, open_store

    p = write_jsonl(tmp_path / "w.jsonl", [{"id": "x", "text": "First writer's document."}])
    index_corpus(p, "writers", dataset="first", id_field="id", indexer=indexer_obj, progress=False)
    holder = open_store("writers")
    holder.lock()  # a writer in progress
    try:
        q = write_jsonl(tmp_path / "w2.jsonl", [{"id": "y", "text": "Second writer's document."}])
        with pytest.raises(IndexLocked):
            index_corpus(q, "writers", dataset="second", id_field="id", indexer=indexer_obj, progress=False)
        assert holder.read_manifest()["datasets"] == ["first"]
    finally:
        holder.close()


def test_stale_latent_stats_are_reported_and_search_says_how_to_fix(indexer_obj, tmp_path):
    from indexer.ingest.pipeline import index_corpus

    rows = [{"id": f"s{i}", "text": r["text"][:300]} for i, r in enumerate(load_bbc(2, seed=5))]
    index_corpus(write_jsonl(tmp_path / "a.jsonl", rows[:6]), "stale", dataset="d", id_field="id", indexer=indexer_obj, progress=False)
    # an ingest that dies after its writes, before the latent refresh
    index_corpus(write_jsonl(tmp_path / "b.jsonl", rows[6:]), "stale", dataset="d", id_field="id", indexer=indexer_obj,
                 progress=False, refresh_latents=False)
    info = json.loads(_cli("info", "--index", "stale", "--json").stdout)
    assert info["latent_stats"] == {"documents": 10, "documents_covered": 6, "stale": True}
    r = _cli("search", "government spending", "--index", "stale", "--json")
    assert r.exit_code == 2 and "cover 6 of 10 documents" in r.output and "saedex label --index stale" in r.output
    assert _cli("label", "--index", "stale", "--json").exit_code == 0
    r = _cli("search", "government spending", "--index", "stale", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["results"]


def test_drop_refuses_while_another_process_has_the_index_open(indexer_obj, tmp_path):
    from indexer.ingest.pipeline import index_corpus

    index_corpus(write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "text": "Kept while in use."}]), "held", dataset="d",
                 id_field="id", indexer=indexer_obj, progress=False)
    code = ("import sys, time; from indexer.store import open_store; s = open_store('held'); s.get_docs(['x']);"
            " print('open', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert proc.stdout.readline().strip() == "open"
        r = _cli("drop", "--index", "held", "--json")
        assert r.exit_code == 1 and "open in another process" in r.output
        assert "held" in json.loads(_cli("indexes", "--json").stdout)["indexes"]
    finally:
        proc.kill()
        proc.wait()
    r = _cli("drop", "--index", "held", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"dropped": "held", "existed": True}


def test_document_vector_does_not_depend_on_batch_neighbours(indexer_obj):
    from indexer.ingest.corpus import Record

    texts = [r["text"] for r in load_bbc(2, seed=9, max_chars=None)]  # whole articles of different lengths
    recs = [Record(str(i), t, {}) for i, t in enumerate(texts)]
    indexer_obj.clear_recent()  # read every text (not the copy of an earlier reading)
    together = indexer_obj.encode_records(recs, "x")
    for i in (0, 3, 7):
        indexer_obj.clear_recent()
        report = IndexReport("x", "x")
        alone = indexer_obj.encode_records([recs[i]], "x", report)[0]
        assert report.repeated_texts == 0 and report.tokens > 0
        assert alone.sparse_indices == together[i].sparse_indices
        assert alone.sparse_values == together[i].sparse_values  # bit-identical: no padding, no shared rows
    # ... which is why a text met again is read once and its vector copied: a repeat under another id
    report = IndexReport("x", "x")
    again = indexer_obj.encode_records([recs[7], Record("copy", texts[7], {"n": 1}), recs[7]], "x", report)
    assert report.repeated_texts == 3 and report.tokens == 0  # recs[7] was the last text read above
    assert again[1].sparse_values == together[7].sparse_values and again[1].payload["_fires"] == together[7].payload["_fires"]
    assert again[1].doc_id == "copy" and again[1].payload["n"] == 1


def test_long_documents_are_read_whole_across_windows_with_exact_spans(indexer_obj):
    from indexer.ingest.pipeline import Indexer
    from indexer.encode.pooling import unpack
    from indexer.encode.reader import ReaderConfig
    from indexer.ingest.corpus import Record

    text = " ".join(r["text"] for r in load_bbc(1, seed=2, max_chars=None))  # ~2,000 tokens: several 256-token windows
    small = Indexer(ReaderConfig(window=256, overlap=32, precision=indexer_obj.reader_cfg.precision))
    point = small.encode_records([Record("long", text, {})], "x")[0]
    tok = small.reader.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert point.payload["n_tokens"] == len(tok["input_ids"]) > 1000
    offs = unpack(point.payload["_offsets"], 2)
    assert [tuple(o) for o in offs] == [tuple(o) for o in tok["offset_mapping"]]
    fires = unpack(point.payload["_fires"], 2)
    assert fires[:, 1].max() > 900  # latents peak deep into the document, far past the first window
    # the last window's tokens are read with context: the vector of the whole document differs from its first window's
    first = small.encode_records([Record("head", text[: offs[255][1]], {})], "x")[0]
    assert len(point.sparse_indices) > len(first.sparse_indices)
