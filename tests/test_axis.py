"""Axis resolution and positions (analyses/axis.py): no index needed, MiniLM only."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from analyses.axis import Axis, positions, resolve_axis, value_profile


def test_an_axis_resolves_to_poles_a_taxonomy_group_or_the_nearest_concepts():
    ax = resolve_axis("objective description vs opinion")
    assert ax.source == "poles" and ax.values == ["objective description", "opinion"]
    assert resolve_axis("formal versus casual").values == ["formal", "casual"]
    topic = resolve_axis("news topic")
    assert topic.source == "taxonomy group: topic" and {"football", "business", "election"} <= set(topic.values)
    assert resolve_axis("tone").source == "taxonomy group: tone"
    other = resolve_axis("reasoning style")  # no group is close enough: the nearest concepts
    assert other.source == "nearest taxonomy concepts" and len(other.values) == 24


def test_positions_weigh_latents_by_their_lean_and_ignore_document_length():
    W = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], np.float32)  # latent 2 leans to both
    p90 = np.array([2.0, 2.0, 2.0], np.float32)
    X = sp.csr_matrix(np.array([[2.0, 0.0, 0.0], [0.0, 50.0, 0.0], [8.0, 0.0, 0.0]], np.float32))
    F = positions(X, p90, W)
    assert np.allclose(F[0], [1, 0]) and np.allclose(F[1], [0, 1]) and np.allclose(F[2], F[0])  # capped, unit length
    ax = Axis("x", ["a", "b"], ["a", "b"], "poles")
    prof = value_profile(F, np.array([0, 1, 0]), 2, ax)
    assert prof[0][0]["value"] == "a" and prof[1][0]["value"] == "b"
