"""Length-aware diffing on a planted confound: B holds A's documents, half of them lengthened with
filler drawn from the same token distribution. Max-pooling gives the longer texts more latents,
so the raw diff finds many; the length-matched diff must find none, yet still find a latent
planted in B alone. Synthetic token draws in a real Qdrant Edge store with its columnar copy."""

from __future__ import annotations

import re

import numpy as np
import pytest

from analyses.diff import diff
from analyses.length import bucket_strata, cmh
from analyses.params import DiffParams
from indexer.store import DocPoint, open_store
from tests.test_columns import D_SAE, make_store

PLANTED = 500  # a latent only some B documents have, whatever their length
ZIPF = 1.0 / np.arange(1, 401) ** 0.9  # token -> latent draws over 400 content latents


def _pool(tokens: np.ndarray, rng) -> tuple[list[int], list[float]]:
    """Max-pool: each token fires one latent at a random strength; a document keeps each latent's max."""
    acts = rng.uniform(0.5, 2.0, len(tokens))
    best: dict[int, float] = {}
    for t, a in zip(tokens.tolist(), acts.tolist()):
        best[t] = max(best.get(t, 0.0), a)
    ids = sorted(best)
    return ids, [best[i] for i in ids]


def planted_points(n: int = 300, seed: int = 0, plant_share: float = 0.3) -> list[DocPoint]:
    rng = np.random.default_rng(seed)
    p = ZIPF / ZIPF.sum()
    pts = []
    for i in range(n):
        length = int(rng.lognormal(3.5, 0.6)) + 5
        tokens = rng.choice(len(p), size=length, p=p)
        ids, vals = _pool(tokens, rng)
        pts.append(DocPoint(f"a{i}", ids, vals, rng.normal(size=4).tolist(),
                            {"dataset": "A", "side": "a", "text": f"a {i}", "n_tokens": length}))
        if i % 2:  # filler: as many tokens again, from the same distribution
            tokens = np.concatenate([tokens, rng.choice(len(p), size=length + int(rng.integers(10, 60)), p=p)])
        ids, vals = _pool(tokens, rng)
        if rng.random() < plant_share:
            ids, vals = ids + [PLANTED], vals + [1.5]
        pts.append(DocPoint(f"b{i}", ids, vals, rng.normal(size=4).tolist(),
                            {"dataset": "B", "side": "b", "text": f"b {i}", "n_tokens": len(tokens)}))
    return pts


@pytest.fixture(scope="module")
def confounded() -> str:
    name = "lengthconf"
    if not open_store(name).exists():
        make_store(name, planted_points())
    return name


def _run(name: str, **kw) -> dict:
    params = DiffParams(**({"a": {"dataset": "A"}, "b": {"dataset": "B"}, "floor": 0, "top": 50, "min_coverage": 0.0} | kw))
    with open_store(name) as store:
        return diff(store, name, params, n_examples=1)


def test_planted_length_confound_vanishes_and_the_planted_latent_stays(confounded):
    raw = _run(confounded, length="none")
    fixed = _run(confounded)
    assert raw["length"]["b_over_a"] > 1.3 and fixed["length"]["correction"] == "stratified"
    raw_sig = {r["latent"] for r in raw["latents"] if r["p_adj"] < 0.05}
    assert len(raw_sig - {PLANTED}) >= 10  # the confound: many latents "more in B"
    sig = [r for r in fixed["latents"] if r["p_adj"] < 0.05]
    assert [r["latent"] for r in sig] == [PLANTED] and sig[0]["more_in"] == "b"
    assert fixed["significant"] == 1 and fixed["length_driven"] >= 10
    driven = [r for r in fixed["latents"] if r["length_driven"]]
    assert driven and all(r["p_adj_raw"] < 0.05 <= r["p_adj"] and r["more_in"] for r in driven)
    assert PLANTED not in {r["latent"] for r in driven}
    assert abs(sig[0]["diff_length_matched"] + 0.3) < 0.1  # the planted share, at equal lengths too


def test_counts_stored_per_length_bucket_answer_dataset_slices_as_a_pass_would(confounded):
    """Dataset slices read the per-bucket counts the copy stores; the same slices named by another
    field stream the non-zeros: the two must agree exactly."""
    stored = _run(confounded)
    streamed = _run(confounded, a={"side": "a"}, b={"side": "b"})
    assert stored["length"] == streamed["length"] and stored["significant"] == streamed["significant"]
    assert [(r["latent"], r["z"], r["p_adj"], r["diff_length_matched"]) for r in stored["latents"]] == \
        [(r["latent"], r["z"], r["p_adj"], r["diff_length_matched"]) for r in streamed["latents"]]


def test_multi_b_names_the_slice_of_each_maximum(confounded):
    out = _run(confounded, b=[{"dataset": "B"}, {"dataset": "A"}])
    assert all(r["b_slice"] in (0, 1) for r in out["latents"])
    assert next(r for r in out["latents"] if r["latent"] == PLANTED)["b_slice"] == 0


def test_cmh_agrees_with_the_unstratified_test_in_one_stratum_and_weights_strata():
    from analyses.diff import two_proportion_test

    ca, cb = np.array([[30.0, 5.0]]), np.array([[10.0, 5.0]])
    z, p, rd = cmh(ca, np.array([100.0]), cb, np.array([100.0]))
    z2, _ = two_proportion_test(ca[0], 100, cb[0], 100)
    assert np.allclose(z, z2, rtol=0.01) and np.allclose(rd, [0.2, 0.0])
    # a stratum only one slice reaches carries no weight; none at all: NaN (untestable)
    z, p, rd = cmh(np.array([[10.0], [50.0]]), np.array([20.0, 50.0]), np.array([[5.0], [0.0]]), np.array([20.0, 0.0]))
    assert rd[0] == pytest.approx(0.25)
    _, _, rd = cmh(np.array([[10.0]]), np.array([20.0]), np.array([[5.0]]), np.array([0.0]))
    assert np.isnan(rd[0])
    # strata are groups of consecutive fixed buckets with about equal shares of the documents
    s = bucket_strata([np.arange(1, 801, dtype=float)], 4)
    assert list(np.unique(s)) == [0, 1, 2, 3] and np.all(np.diff(s) >= 0)
    assert set(bucket_strata([np.full(10, 50.0)], 8).tolist()) == {0}  # one length: one stratum


def test_d_sae_covers_the_planted_latent():
    assert PLANTED < D_SAE


def test_diff_reads_on_its_own_groups_sides_summary_and_formats(confounded, tmp_path):
    from analyses.formats import render
    from analyses.report import write_report

    out = _run(confounded)
    assert set(out["groups"]) == {"a", "b"}
    assert all(g["more_in"] == "a" for g in out["groups"]["a"]) and all(g["more_in"] == "b" for g in out["groups"]["b"])
    assert sum(g["count"] for g in out["groups"]["a"] + out["groups"]["b"]) == len(out["latents"])
    s = out["summary"]
    assert re.search(r"\(\d length strata\)", s) and "1 of" in s and "explained by length" in s and "Nothing is significantly more frequent in A" in s
    raw = _run(confounded, length="none")
    assert "as long as" in raw["summary"] and "use the length correction" in raw["summary"]
    csv_text = render("diff", out, "csv")
    assert csv_text.splitlines()[0].startswith("more in,label,latents") and len(csv_text.splitlines()) == 1 + len(out["groups"]["a"]) + len(out["groups"]["b"])
    assert render("diff", out, "md").count("\n| ") >= 2 and "<table>" in render("diff", out, "html")
    with open_store(confounded) as store:
        info = write_report(store, confounded, DiffParams(a={"dataset": "A"}, b={"dataset": "B"}, floor=0, top=20), tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert info["bytes"] > 10_000 and page.count("data:image/png;base64,") == 2 and "<script" not in page
    assert "Without the length correction" in page and "More in B" in page


def test_group_rows_merges_shared_labels_and_fired_text_and_marks_spans():
    from analyses.formats import marked
    from analyses.readable import group_rows, snippet

    ex = lambda t, s, e: {"doc_id": "d", "text": t, "mark": [s, e], "fields": {}}  # noqa: E731
    rows = [
        {"latent": 1, "label": 'token "of"', "more_in": "a", "freq_a": 0.5, "freq_b": 0.1, "diff": 0.4, "p_adj": 0.01, "example": ex("a of b", 2, 4)},
        {"latent": 2, "label": "possession", "more_in": "a", "freq_a": 0.4, "freq_b": 0.1, "diff": 0.3, "p_adj": 0.02, "example": ex("x of y", 2, 4)},
        {"latent": 3, "label": 'Token "of"', "more_in": "a", "freq_a": 0.3, "freq_b": 0.1, "diff": 0.2, "p_adj": 0.03, "example": None},
        {"latent": 4, "label": 'token "of"', "more_in": "b", "freq_a": 0.1, "freq_b": 0.3, "diff": -0.2, "p_adj": 0.04, "example": None},
        {"latent": 5, "label": "rain", "more_in": "a", "freq_a": 0.2, "freq_b": 0.1, "diff": 0.1, "p_adj": 0.5, "example": ex("it rained today", 3, 9)},
    ]
    groups = group_rows(rows)
    assert [(g["latents"], g["more_in"]) for g in groups] == [([1, 2, 3], "a"), ([4], "b"), ([5], "a")]
    assert groups[0]["count"] == 3 and groups[0]["p_adj"] == 0.01 and groups[0]["other_labels"] == ['Token "of"', "possession"]
    sn = snippet("x" * 200 + "FIRE" + "y" * 200, [200, 204], width=10)
    assert sn["text"][sn["mark"][0] : sn["mark"][1]] == "FIRE" and sn["text"].startswith("…") and sn["text"].endswith("…")
    assert marked({"text": "a b c", "mark": [1, 3]}, "md") == "a **b** c"
    assert marked({"text": "<b>", "mark": [0, 3]}, "html") == "<mark>&lt;b&gt;</mark>"


def test_length_matched_npmi_removes_co_occurrence_that_length_alone_explains():
    from analyses.length import doc_strata, length_matched_npmi

    rng = np.random.default_rng(0)
    n = 4000
    tokens = np.where(rng.random(n) < 0.5, 20, 400)  # short and long documents
    p_fire = np.where(tokens > 100, 0.6, 0.05)  # both latents fire more in long ones, independently
    a = np.flatnonzero(rng.random(n) < p_fire)
    b = np.flatnonzero(rng.random(n) < p_fire)
    strata = doc_strata([{"n_tokens": int(t)} for t in tokens])
    both = len(np.intersect1d(a, b))
    raw = np.log(both * n / (len(a) * len(b))) / -np.log(both / n)
    assert raw > 0.15 and abs(length_matched_npmi(a, b, strata)) < 0.05
    c = np.intersect1d(a, np.flatnonzero(rng.random(n) < 0.9))  # truly tied to a: stays high
    assert length_matched_npmi(a, c, strata) > 0.3
    assert doc_strata([{"n_tokens": 3}, {}]) is None
