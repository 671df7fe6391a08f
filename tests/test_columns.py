"""The columnar analytics copy: filters agree with Qdrant, merges keep every row, a kill -9 between
the Qdrant write and the copy's write is detected and repaired, a deleted copy is rebuilt with
identical analysis results. No model: synthetic vectors in a real Qdrant Edge store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from indexer.store.columns import ColumnCopy, copy_for, fresh_copy, row_mask
from indexer.store.catalog import add_dataset
from indexer.encode.recipe import Recipe, create_manifest, read_manifest
from indexer.store import DocPoint, Filter, open_store

D_SAE = 512


def synth_points(n: int, seed: int = 0, start: int = 0) -> list[DocPoint]:
    rng = np.random.default_rng(seed)
    pts = []
    for i in range(start, start + n):
        k = int(rng.integers(5, 40))
        ids = np.unique(rng.choice(D_SAE, size=k, replace=False))
        payload = {"dataset": "A" if i % 3 else "B", "label": ["x", "y", "z"][i % 3], "year": 2000 + i % 4,
                   "flag": bool(i % 2), "tags": ["t1", "t2"] if i % 5 == 0 else ["t3"],
                   "mixed": ("s" if i % 2 else 7), "text": f"doc {i}", "content_hash": f"h{i}"}
        if i % 7 == 0:
            payload.pop("label")
        pts.append(DocPoint(f"d{i}", ids.tolist(), rng.lognormal(0, 0.5, len(ids)).astype(np.float32).tolist(),
                            rng.normal(size=4).tolist(), payload))
    return pts


def make_store(name: str, points: list[DocPoint], with_copy: bool = True, dim: int = 4, datasets=("A", "B")):
    """A real Qdrant Edge index of synthetic points (dense and label vectors of ``dim``) with its
    manifest and, unless ``with_copy`` is off, its columnar copy."""
    store = open_store(name)
    store.create(dense_dim=dim, label_dim=dim)
    recipe = Recipe.external(D_SAE)
    create_manifest(store, recipe)
    for d in datasets:
        add_dataset(store, d)
    copy = copy_for(store, recipe)
    if with_copy:
        copy.initialise()
    for s in range(0, len(points), 16):
        store.upsert_docs(points[s : s + 16])
        if with_copy:
            copy.append_points(points[s : s + 16])
    return store, recipe


def scan_qdrant(store, flt=None) -> dict[str, dict[int, float]]:
    return {h.doc_id: h.sparse for hits in store.scroll_docs(flt=flt, with_sparse=True, payload_fields=["doc_id"]) for h in hits}


def copy_rows(copy: ColumnCopy, flt=None) -> dict[str, dict[int, float]]:
    out = {}
    for shard in copy.iter_shards():
        ids = shard.doc_ids()
        for r in np.flatnonzero(row_mask(shard.table, flt)):
            a, b = shard.indptr[r], shard.indptr[r + 1]
            out[ids[r]] = dict(zip(shard.indices[a:b].astype(int).tolist(), shard.values[a:b].tolist()))
    return out


FILTERS = [
    {}, {"dataset": "A"}, {"dataset": ["A", "B"]}, {"label": "x"}, {"label": ["x", "z"]}, {"year": 2001},
    {"year": [2000, 2003]}, {"flag": True}, {"flag": False}, {"tags": "t1"}, {"tags": ["t2", "t3"]},
    {"mixed": "s"}, {"mixed": 7}, {"year": "2001"}, {"missing": "x"}, {"dataset": "A", "label": "y", "flag": False},
]


@pytest.mark.parametrize("equals", FILTERS, ids=[str(f) for f in FILTERS])
def test_filters_on_the_copy_select_what_qdrant_selects(equals):
    name = "colfilt"
    store = open_store(name)
    if not store.exists():
        store, _ = make_store(name, synth_points(150))
    manifest = read_manifest(store).recipe
    copy = copy_for(store, manifest)
    flt = Filter(dict(equals))
    want = scan_qdrant(store, flt)
    if any(isinstance(v, bool) for v in equals.values()):
        # Qdrant Edge 0.9's binding reads a Python True as 1; the store passes numpy booleans
        # (indexer.store.base.build_filter), so booleans match as Qdrant documents them
        pts = {p.doc_id: p for p in synth_points(150)}
        assert want and all(all(pts[d].payload.get(k) is v for k, v in equals.items()) for d in want)
    got = copy_rows(copy, flt)
    assert set(got) == set(want)
    for d, vec in want.items():
        assert got[d].keys() == vec.keys()
        assert np.allclose([got[d][k] for k in vec], list(vec.values()), rtol=0, atol=0)
    store.close()


def test_small_shards_are_merged_and_keep_every_row_in_order():
    store, manifest = make_store("colmerge", synth_points(16 * 70))  # 70 appends of 16 rows
    copy = copy_for(store, manifest)
    shards = copy.shards()
    assert len(shards) < 20, [s.rows for s in shards]
    assert sum(s.rows for s in shards) == 16 * 70
    ids = [d for sh in copy.iter_shards() for d in sh.doc_ids()]
    assert ids == [f"d{i}" for i in range(16 * 70)]
    assert copy.is_fresh(store.count())
    store.close()


def test_counts_per_dataset_match_the_rows():
    store, manifest = make_store("colcounts", synth_points(200))
    copy = copy_for(store, manifest)
    total = {}
    for sh in copy.iter_shards():
        for j, ds in enumerate(sh.counts["datasets"].tolist()):
            total[ds] = total.get(ds, 0) + sh.counts["present_at_0"][j]
    for ds in ("A", "B"):
        want = np.zeros(D_SAE, int)
        for vec in scan_qdrant(store, Filter({"dataset": ds})).values():
            want[list(vec)] += 1
        assert np.array_equal(total[ds], want)
    store.close()


KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from tests.test_columns import synth_points, make_store
    from indexer.store.columns import copy_for
    from indexer.store import open_store
    pts = synth_points(160)
    store, manifest = make_store("colkill", pts[:96])
    copy = copy_for(store, manifest)
    store.upsert_docs(pts[96:112])   # Qdrant has the chunk ...
    os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies before the copy's write
""")


def test_kill_between_qdrant_and_copy_is_detected_and_rebuilt_identically(tmp_path):
    from tests.conftest import ROOT

    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", KILLER.format(root=str(ROOT))], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    store = open_store("colkill")
    manifest = read_manifest(store).recipe
    copy = copy_for(store, manifest)
    assert store.count() == 112 and copy.n_rows() == 96
    assert not copy.is_fresh(store.count())
    fresh = fresh_copy(store, manifest, progress=False)  # what every analysis calls first
    assert fresh.is_fresh(112)
    assert copy_rows(fresh) == scan_qdrant(store)
    store.close()


def test_a_deleted_copy_is_rebuilt_and_analyses_give_identical_results():
    from analyses.correlations import correlations
    from analyses.diff import diff
    from analyses.params import CorrelationsParams, DiffParams

    store, manifest = make_store("colrebuild", synth_points(300, seed=3))
    dp = DiffParams(a={"dataset": "A"}, b={"dataset": "B"}, top=10, floor=0.0)
    cp = CorrelationsParams(min_support=3, top=10, floor=0.0, max_label_sim=1.0)
    d1 = diff(store, "colrebuild", dp)
    c1 = correlations(store, "colrebuild", cp)
    copy = copy_for(store, manifest)
    copy.drop()
    assert not copy.is_fresh(store.count())
    d2 = diff(store, "colrebuild", dp)
    c2 = correlations(store, "colrebuild", cp)
    assert copy.is_fresh(store.count())
    assert d1 == d2 and c1 == c2
    assert d1["latents"], "the synthetic slices must differ somewhere for this test to mean anything"
    store.close()


def test_streaming_clustering_equals_the_in_memory_algorithm(monkeypatch):
    """Above MAX_SPECTRAL_DOCS the slice is clustered in passes over the copy; the result must be
    the in-memory algorithm's (same sample, same spectral fit, same assignment and description)."""
    import analyses.clustering as C
    from analyses.params import ClusterParams

    store, _ = make_store("colcluster", synth_points(600, seed=5))
    monkeypatch.setattr(C, "MAX_SPECTRAL_DOCS", 200)
    p = ClusterParams(k=3, label_field="label")
    a = C.cluster(store, "colcluster", p, stream_above=10**9)  # in memory
    b = C.cluster(store, "colcluster", p)  # streaming
    assert b.pop("fitted_on") == 200
    assert a["assignments"] == b["assignments"] and a["scores"] == b["scores"]
    for ca, cb in zip(a["clusters"], b["clusters"]):
        assert ca["size"] == cb["size"]
        assert [(x["latent"], x["diff"], x["freq_in"]) for x in ca["latents"]] == [(x["latent"], x["diff"], x["freq_in"]) for x in cb["latents"]]
        assert np.allclose([x["p_adj"] for x in ca["latents"]], [x["p_adj"] for x in cb["latents"]], rtol=1e-5)
        # the in-memory path scores centrality in float32, the streaming one in float64: ties may break differently
        assert len(set(ca["examples"]) & set(cb["examples"])) >= 4
    store.close()


def test_streaming_pole_clustering_equals_the_in_memory_algorithm(monkeypatch):
    """Two poles add a model fitted on the sample and a second pass that scores every document:
    the streamed slice must still be clustered exactly as in memory."""
    import analyses.clustering as C
    from analyses.axis import Axis
    from analyses.params import ClusterParams

    store, _ = make_store("colpoles", synth_points(600, seed=6))
    lean = np.random.default_rng(1).random((D_SAE, 2)).astype(np.float32)

    def axis_model(store, index, axis, d_sae, cols):  # a synthetic axis: the synthetic index has no latent snippets
        W = np.zeros((d_sae, 2), np.float32)
        W[cols] = lean[cols]
        return Axis(axis, ["a", "b"], ["a", "b"], "poles"), W, np.ones(d_sae, np.float32)

    monkeypatch.setattr(C, "_axis_model", axis_model)
    monkeypatch.setattr(C, "MAX_SPECTRAL_DOCS", 200)
    p = ClusterParams(k=2, axis="a vs b", label_field="label")
    a = C.cluster(store, "colpoles", p, stream_above=10**9)
    b = C.cluster(store, "colpoles", p)
    assert b.pop("fitted_on") == 200
    assert a["assignments"] == b["assignments"] and a["scores"] == b["scores"]
    assert a["axis_resolved"]["pole_model"] == b["axis_resolved"]["pole_model"]
    assert a["axis_resolved"]["pole_model"]["seed_documents"] == 40
    assert len(set(a["assignments"].values())) == 2
    store.close()


def test_analyses_refuse_requests_beyond_their_cost_bounds():
    """The bounds live in the parameter models: every caller (library, CLI, API) meets them, in
    one line naming the parameter."""
    from analyses.params import ClusterParams, CorrelationsParams, DiffParams
    from indexer.core.filters import FilterError
    from indexer.core.params import ParamsError

    with pytest.raises(ParamsError, match=r"^--b: .*at most 32 items"):
        DiffParams.parse(a={"dataset": "A"}, b=[{"dataset": "B"}] * 33)
    with pytest.raises(ParamsError, match=r"^--a\[label\]: .*at most 1000 items"):
        DiffParams.parse(a={"label": [str(i) for i in range(1001)]}, b={"dataset": "B"})
    with pytest.raises(ParamsError, match=r"^--top: Input should be less than or equal to 1000"):
        CorrelationsParams.parse(top=10**6)
    with pytest.raises(ParamsError, match=r"^--k: Input should be less than or equal to 100"):
        ClusterParams.parse(k=1000)
    with pytest.raises(FilterError, match=r"^a\.x: .* not a finite number"):
        DiffParams(a={"x": float("nan")}, b={"dataset": "B"}).to_filter({"x": float("nan")}, "a")
