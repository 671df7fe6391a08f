"""The store interface against both backends: Qdrant Edge (default) and qdrant-client.

The server backend runs against a real Qdrant server when SAEDEX_TEST_QDRANT_URL is set, and
otherwise against qdrant-client's in-process mode, which exercises the same client code path.
"""

from __future__ import annotations

import os

import pytest

from indexer.store import LATENTS, DocPoint, EdgeStore, Filter, LatentPoint, ServerStore, StoreError


def _backends():
    yield "edge"
    yield "client"


@pytest.fixture(params=list(_backends()))
def store(request, tmp_path):
    if request.param == "edge":
        s = EdgeStore(tmp_path / "idx")
    else:
        url = os.environ.get("SAEDEX_TEST_QDRANT_URL", ":memory:")
        s = ServerStore(url, f"t{abs(hash(str(tmp_path))) % 10**8}")
    s.create(dense_dim=4, label_dim=3)
    yield s
    s.drop()


def _docs():
    return [
        DocPoint("a", [1, 5, 9], [0.5, 1.0, 2.0], [1, 0, 0, 0], {"text": "alpha", "dataset": "x", "n": 1}),
        DocPoint("b", [5, 7], [3.0, 1.0], [0, 1, 0, 0], {"text": "beta", "dataset": "y", "n": 2}),
        DocPoint("c", [9], [4.0], [0, 0, 1, 0], {"text": "gamma", "dataset": "y", "n": 3}),
    ]


def test_docs_roundtrip_search_and_filters(store):
    store.upsert_docs(_docs())
    store.upsert_docs(_docs()[:1])  # idempotent: same id overwrites
    assert store.count() == 3
    assert store.count(Filter({"dataset": "y"})) == 2
    assert store.count(Filter({"dataset": ["x", "y"]})) == 3
    assert store.existing_doc_ids(["a", "zzz", "c"]) == {"a", "c"}
    hits = store.search_sparse([5, 9], [1.0, 1.0], 10)
    assert [h.doc_id for h in hits][:1] == ["c"] and {h.doc_id for h in hits} == {"a", "b", "c"}
    assert hits[0].score == pytest.approx(4.0)
    assert [h.doc_id for h in store.search_sparse([5], [1.0], 10, Filter({"dataset": "x"}))] == ["a"]
    assert store.search_dense([0, 1, 0.1, 0], 1)[0].doc_id == "b"
    fused = store.search_hybrid([9], [1.0], [0, 0, 1, 0], 3, rrf_k=60)
    assert fused[0].doc_id == "c"  # first in both lists
    # weighted RRF: sparse ranks b, a; dense ranks a first - the weight decides (both backends)
    lead = {w: store.search_hybrid([5], [1.0], [1, 0.1, 0, 0], 3, rrf_k=1, sparse_weight=w)[0].doc_id for w in (0.1, 10.0)}
    assert lead == {0.1: "a", 10.0: "b"}
    with pytest.raises(ValueError, match="fusion must be one of"):
        store.search_hybrid([9], [1.0], [1, 0, 0, 0], 3, fusion="max")
    got = store.get_docs(["c", "a"], with_sparse=True)
    assert [g.doc_id for g in got] == ["c", "a"] and got[1].sparse == {1: 0.5, 5: 1.0, 9: 2.0}
    scanned = [h for batch in store.scroll_docs(batch=2) for h in batch]
    assert sorted(h.doc_id for h in scanned) == ["a", "b", "c"]


def test_search_without_fields_and_doc_payloads(store):
    """Search leaves bulky fields out of hits (``without_fields``) and reads them for a few ids."""
    docs = _docs()
    for d in docs:
        d.payload["_fires"] = "x" * 1000
    store.upsert_docs(docs)
    for hits in (store.search_sparse([5, 9], [1.0, 1.0], 10, without_fields=("_fires",)),
                 store.search_dense([0, 1, 0.1, 0], 3, without_fields=("_fires",)),
                 store.search_hybrid([9], [1.0], [0, 0, 1, 0], 3, without_fields=("_fires",))):
        assert hits and all("_fires" not in h.payload and h.payload["text"] and h.payload["n"] for h in hits)
    assert all("_fires" in h.payload for h in store.search_sparse([5, 9], [1.0, 1.0], 10))
    got = store.doc_payloads(["c", "zzz", "a"], ["_fires", "n"])
    assert got == {"c": {"doc_id": "c", "_fires": "x" * 1000, "n": 3}, "a": {"doc_id": "a", "_fires": "x" * 1000, "n": 1}}


def test_score_fusion_sums_each_lists_scores_normalised_by_mean_and_three_sd(store):
    """DBSF (the hybrid default) keeps how strongly each side matched, which RRF's ranks drop:
    the engine's order equals a reference computed here, and differs from RRF's on this data."""
    import numpy as np

    rng = np.random.default_rng(3)
    vals, dense = rng.gamma(1.0, 2.0, 12), rng.normal(size=(12, 4))
    store.upsert_docs([DocPoint(f"d{i}", [1], [float(vals[i])], dense[i].tolist(), {"text": "x"}) for i in range(12)])
    q = np.array([1.0, 0.5, -0.2, 0.3])

    def norm(s):
        lo, hi = s.mean() - 3 * s.std(), s.mean() + 3 * s.std()
        return (s - lo) / (hi - lo)

    cos = dense @ q / np.linalg.norm(dense, axis=1) / np.linalg.norm(q)
    want = [f"d{i}" for i in np.argsort(-(norm(vals) + norm(cos)))]
    got = [h.doc_id for h in store.search_hybrid([1], [1.0], q.tolist(), 12, prefetch=12, fusion="dbsf")]
    assert got == want
    assert got != [h.doc_id for h in store.search_hybrid([1], [1.0], q.tolist(), 12, prefetch=12, rrf_k=60)]


def test_latents_and_manifest(store):
    store.upsert_latents([LatentPoint(3, [1, 0, 0], [0, 1, 0], {"label": "x"}), LatentPoint(4, [0, 1, 0], [1, 0, 0], {"label": "y"})])
    assert [p.latent for p in store.get_latents([4, 3, 99])] == [4, 3]  # the ids asked, in that order, those present
    assert [p.payload["label"] for p in store.get_latents()] == ["x", "y"]
    assert store.get_latents([4], with_vectors=True)[0].label_vec == pytest.approx([0, 1, 0])
    token = store.manifest_token()
    store.write_manifest({"reader": {"model": "m"}})
    got = store.read_manifest()
    # every write stamps a new revision; the generation is set once per index
    assert {k: v for k, v in got.items() if k not in ("generation", "revision")} == {"reader": {"model": "m"}}
    assert store.manifest_token() != token
    store.write_manifest(dict(got))
    again = store.read_manifest()
    assert again["generation"] == got["generation"] and again["revision"] != got["revision"]


def test_latent_examples_round_trip_and_an_older_indexs_list_still_reads(store):
    """Examples and negatives are written as JSON strings (fast across the Rust boundary) and read
    back as the lists they were; a latent written by an older release (nested lists) reads the same."""
    examples = [{"doc_id": "d1", "activation": 2.5, "text": "naïve “quotes” ✓", "span": [3, 5], "doc_span": [10, 12]}]
    lists = {"examples": examples, "negatives": examples[::-1]}
    store.upsert_latents([LatentPoint(7, [1, 0, 0], [0, 1, 0], {"label": "x", **lists})])
    store._upsert(LATENTS, [(8, {"label": [0, 1, 0], "snippets": [1, 0, 0]}, {"label": "old", **lists, "latent": 8})])
    raw = store._retrieve(LATENTS, [7], True, False)[0].payload
    assert isinstance(raw["examples_json"], str) and isinstance(raw["negatives_json"], str) and "examples" not in raw
    for p in store.get_latents([7, 8]):
        assert {k: p.payload[k] for k in lists} == lists and not any(k.endswith("_json") for k in p.payload), p.payload
    only = store.get_latents([7, 8], payload_fields=["examples"])
    assert [p.payload for p in only] == [{"examples": examples}] * 2
    assert [p.payload for p in store.get_latents([7], payload_fields=["negatives", "label"])] == [{"negatives": examples[::-1], "label": "x"}]
    assert store.get_latents([7], payload_fields=["label"])[0].payload == {"label": "x"}


def test_edge_second_process_gets_a_clear_lock_error(tmp_path):
    a = EdgeStore(tmp_path / "locked")
    a.create(4, 3)
    a.upsert_docs(_docs())
    b = EdgeStore(tmp_path / "locked")
    with pytest.raises(StoreError, match="open in another process"):
        b.count()
    a.close()
    assert b.count() == 3
    b.close()
