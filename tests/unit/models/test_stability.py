"""Population stability index against hand-computed values, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.models.stability import BINS, FLOOR, WARN, Reference, drifted


def test_the_same_population_is_stable_and_a_shifted_one_is_not():
    gen = np.random.default_rng(0)
    train = gen.normal(size=(20_000, 2))
    ref = Reference.of(train)
    assert ref.edges.shape == (2, BINS - 1) and np.allclose(ref.shares, 1 / BINS, atol=1e-3)
    same = ref.psi(gen.normal(size=(20_000, 2)))
    assert np.all(same < 0.01)
    moved = ref.psi(np.column_stack([gen.normal(size=20_000), gen.normal(1.0, 1.0, size=20_000)]))
    assert moved[0] < 0.01 and moved[1] > WARN  # only the second column drifted


def test_psi_is_the_formula_on_a_hand_made_reference():
    ref = Reference(np.arange(1, BINS, dtype=float)[None, :], np.full((1, BINS), 1 / BINS))
    X = np.array([0.5] * 50 + [9.5] * 50)  # half in the first bin, half in the last
    a = np.full(BINS, FLOOR)
    a[0] = a[-1] = 0.5
    e = np.full(BINS, 1 / BINS)
    assert ref.psi(X)[0] == pytest.approx(((a - e) * np.log(a / e)).sum())


def test_a_score_vector_is_one_column_and_round_trips_through_arrays():
    ref = Reference.of(np.linspace(0, 1, 1000))
    again = Reference.from_arrays(ref.to_arrays("stability.score"), "stability.score")
    assert again is not None and np.array_equal(again.edges, ref.edges)
    assert Reference.from_arrays({}, "stability.score") is None  # an older part: no reference
    with pytest.raises(ValueError, match="columns"):
        ref.psi(np.zeros((5, 2)))


def test_drifted_names_the_features_past_the_warning_worst_first():
    assert drifted({"a": 0.1, "b": 0.4, "c": 0.3}) == ["b", "c"]


def test_the_window_flags_a_drifted_feature_and_not_a_stable_one():
    from mpc_fl.models.stability import Window

    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 2))
    window = Window(500, ("stable", "moved"), Reference.of(train), None)
    assert window.report()["features"] == {}  # too few rows yet
    scored = np.column_stack([rng.normal(size=800), rng.normal(loc=1.0, size=800)])
    window.add(scored)
    report = window.report()
    assert report["rows"] == 500 and report["drifted"] == ["moved"]
    assert report["features"]["stable"] < 0.1 < 0.25 < report["features"]["moved"]
