"""Parquet export -> import into a new index reproduces diff and search exactly; bad files get
one-line errors naming the row; a recipe that differs from the target index's is refused."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import cli


def run_json(*args):
    r = cli(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def strip_timing(d):
    if isinstance(d, dict):
        return {k: strip_timing(v) for k, v in d.items() if k not in ("seconds", "took_ms", "index")}
    if isinstance(d, list):
        return [strip_timing(x) for x in d]
    return d


def test_export_import_round_trip_reproduces_diff_and_search(indexer_obj, tmp_path):
    # An index of its own: the shared one gets LLM labels from other tests, and labels an LLM
    # wrote are index state that an export does not carry (the import labels from the dictionary).
    from indexer.ingest.pipeline import index_corpus
    from tests.conftest import load_bbc, write_jsonl

    bbc_index = "rt_source"
    n = 40  # article openings: what a round trip needs (three indexes are built here; each new one is labelled)
    src = write_jsonl(tmp_path / "src.jsonl", load_bbc(n // 5))
    assert index_corpus(src, bbc_index, dataset="bbc", id_field="id", indexer=indexer_obj, progress=False).indexed == n
    path = tmp_path / "bbc.parquet"
    out = run_json("export", "--index", bbc_index, "--parquet", str(path), "--dense")
    assert out["documents"] == n
    t = pq.read_table(path)
    assert {"id", "dataset", "text", "latents", "values", "dense", "topic"} <= set(t.column_names)
    assert t.schema.field("latents").type == pa.list_(pa.int32()) and t.schema.field("values").type == pa.list_(pa.float32())
    assert json.loads(t.schema.metadata[b"saedex.recipe"])["sae"]["d_sae"] > 0

    rep = run_json("import", str(path), "--index", "bbc_copy")
    assert rep["indexed"] == n and rep["dense_computed"] == 0
    again = run_json("import", str(path), "--index", "bbc_copy")  # idempotent, like `saedex index`
    assert again["indexed"] == 0 and again["already_indexed"] == n

    for args in (("diff", "--a", "topic=tech", "--b", "topic=business", "--top", "10"),):
        a = run_json(*args, "--index", bbc_index)
        b = run_json(*args, "--index", "bbc_copy")
        assert strip_timing(a) == strip_timing(b)
        assert a["latents"]
    for method in ("sae", "dense", "hybrid"):
        q = ("search", "football match results", "--k", "10", "--method", method)
        a = run_json(*q, "--index", bbc_index)
        b = run_json(*q, "--index", "bbc_copy")
        # the same documents in the same order with identical explanations (latents, weights,
        # activations, contributions, spans) and query latents; the scores Qdrant sums in float32
        # agree to its rounding (seen: 6.829835 vs 6.829837)
        assert [h["id"] for h in a["results"]] == [h["id"] for h in b["results"]], method
        assert [h["text"] for h in a["results"]] == [h["text"] for h in b["results"]]
        assert [h.get("explanation") for h in a["results"]] == [h.get("explanation") for h in b["results"]]
        assert a.get("latents") == b.get("latents")
        for ha, hb in zip(a["results"], b["results"]):
            assert abs(ha["score"] - hb["score"]) <= 1e-5 * max(1.0, abs(ha["score"])), (method, ha["score"], hb["score"])

    # without --dense the import computes the dense vectors itself
    path2 = tmp_path / "nodense.parquet"
    run_json("export", "--index", bbc_index, "--parquet", str(path2), "--where", "topic=tech")
    rep = run_json("import", str(path2), "--index", "bbc_tech")
    assert rep["indexed"] == n // 5 and rep["dense_computed"] == n // 5


def test_bad_import_files_are_refused_in_one_line(bbc_index, tmp_path):
    path = tmp_path / "bbc.parquet"
    run_json("export", "--index", bbc_index, "--parquet", str(path), "--where", "topic=business")
    t = pq.read_table(path)
    meta = t.schema.metadata

    def write(table, name):
        p = tmp_path / name
        pq.write_table(table.replace_schema_metadata(meta), p)
        return p

    lat = t.column("latents").to_pylist()
    lat[3] = lat[3][:-1]
    bad = write(t.set_column(t.column_names.index("latents"), "latents", pa.array(lat, pa.list_(pa.int32()))), "len.parquet")
    r = cli("import", str(bad), "--index", "bad1")
    assert r.exit_code == 2 and "row 3" in r.output and "latents but" in r.output

    lat = t.column("latents").to_pylist()
    lat[5][0] = 10**6
    bad = write(t.set_column(t.column_names.index("latents"), "latents", pa.array(lat, pa.list_(pa.int32()))), "range.parquet")
    r = cli("import", str(bad), "--index", "bad2")
    assert r.exit_code == 2 and "row 5" in r.output and "outside" in r.output

    recipe = json.loads(meta[b"saedex.recipe"])
    recipe["sae"]["hash"] = "0" * 16
    other = tmp_path / "other.parquet"
    pq.write_table(t.replace_schema_metadata({**meta, b"saedex.recipe": json.dumps(recipe).encode()}), other)
    r = cli("import", str(other), "--index", bbc_index)
    assert r.exit_code == 2 and "sae.hash" in r.output

    plain = tmp_path / "plain.parquet"
    pq.write_table(t.replace_schema_metadata({}), plain)
    r = cli("import", str(plain), "--index", "bad3")
    assert r.exit_code == 2 and "saedex.recipe" in r.output
    assert "bad1" not in cli("indexes", "--json").stdout  # nothing half-written


def test_latent_statistics_read_in_latent_blocks_equal_one_pass(monkeypatch):
    """Latent statistics hold one block of latents at a time (a 1M-document index has ~1.5
    billion non-zeros); however the latents are split, the stored statistics are identical."""
    import indexer.labels.refresh as R
    import indexer.store.latent_stats as L
    import tests.test_columns as T

    results = []
    for i, block in enumerate((10**9, 500)):
        monkeypatch.setattr(L, "BLOCK_NNZ", block)
        pts = T.synth_points(200, seed=1)
        for p in pts:
            p.dense = [1.0] + [0.0] * 383
        store, _ = T.make_store(f"blocks{i}", pts, dim=384, datasets=())
        R.refresh_latents(store, progress=False)
        results.append({p.latent: {k: v for k, v in p.payload.items()} for p in store.get_latents()})
        store.close()
    assert len(results[0]) > 400 and results[0] == results[1]
