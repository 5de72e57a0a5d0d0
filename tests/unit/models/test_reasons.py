"""Reason units and the plaintext reasons (:mod:`mpc_fl.models.reasons`): the definition every protocol meets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpc_fl.models.gbdt import NO_SPLIT, GBDTParams, PlainGBDT, Tree, apply_bins
from mpc_fl.models.reasons import (
    Reasons,
    Release,
    agreement,
    lr_contributions,
    top_reasons,
    toward,
    tree_contributions,
)

NAMES = ("orders", "spend", "growth", "late_rate")


def test_units_per_release_level():
    assert Release("feature").units(NAMES).names == NAMES
    none = Release("none", label="platform data").units(NAMES)
    assert none.names == ("platform data",) and none.membership.tolist() == [[1.0]] * 4
    grouped = Release("group", {"activity": ("orders", "spend")}).units(NAMES)
    assert grouped.names == ("activity", "partner data: other")
    assert grouped.membership.tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]


@pytest.mark.parametrize(
    ("release", "message"),
    [
        (lambda: Release("group", {"a": ("orders", "nope")}), "does not have: ['nope']"),
        (lambda: Release("group", {"a": ("orders",), "b": ("orders",)}), "already in group 'a'"),
        (lambda: Release("group"), "needs named groups"),
        (lambda: Release("feature", {"a": ("orders",)}), "for release 'group'"),
        (lambda: Release("all"), "choose from feature, group, none"),
    ],
)
def test_a_bad_release_is_refused_in_one_line(release, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        release().units(NAMES)


def test_groups_are_read_from_json(tmp_path):
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"activity": ["orders"]}))
    assert Release.read("group", str(f)).groups == {"activity": ("orders",)}
    f.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected"):
        Release.read("group", str(f))
    r = Release("group", {"activity": ("orders",)}, "platform")
    assert Release.from_dict(r.to_dict()) == r


def test_lr_contributions_add_up_to_the_margin_minus_the_reference_margin():
    gen = np.random.default_rng(0)
    X, w, ref = gen.normal(size=(50, 4)), gen.normal(size=4), gen.normal(size=4)
    for release in (Release("feature"), Release("none"), Release("group", {"a": ("orders", "growth")})):
        c = lr_contributions(X, w, ref, release.units(NAMES).membership)
        assert np.allclose(c.sum(1), X @ w - ref @ w)


def test_top_reasons_strongest_first_ties_to_the_first_unit():
    C = np.array([[0.1, 0.5, 0.5, -2.0], [0.0, 0.0, 0.0, 0.0]])
    units, values = top_reasons(C, 3)
    assert units.tolist() == [[1, 2, 0], [0, 1, 2]] and values[0].tolist() == [0.5, 0.5, 0.1]
    assert top_reasons(toward(C, "y0"), 1)[0].tolist() == [[3], [0]]
    assert top_reasons(C, 9)[0].shape == (2, 4)  # R above the units: every unit


def test_agreement_forgives_only_swaps_within_the_tolerance():
    names = tuple("abcd")
    ref = Reasons(names, np.array([[0, 1], [0, 1]]), np.array([[2.0, 1.0], [2.0, 1.0]]))
    near = Reasons(names, np.array([[0, 2], [0, 3]]), np.array([[2.0, 0.9995], [2.0, 0.5]]))
    assert agreement(near, ref) == 0.5  # row 0: unit 2 within 1e-3 of the weakest reason; row 1: not
    assert agreement(ref, ref) == 1.0


def _trees() -> tuple[PlainGBDT, np.ndarray]:
    gen = np.random.default_rng(4)
    X = gen.normal(size=(600, 5))
    y = (X[:, 0] - X[:, 1] + 0.5 * X[:, 2] + gen.logistic(size=600) > 0).astype(np.int64)
    return PlainGBDT(GBDTParams(n_trees=4, max_depth=3, n_bins=8)).fit(X, y), X


def test_tree_contributions_add_up_to_the_margin_minus_the_trees_root_values():
    model, X = _trees()
    c = tree_contributions(model.trees_, apply_bins(X, model.edges_), np.eye(5))
    roots = sum(t.node_values[0] for t in model.trees_)
    assert np.allclose(model.base_margin_ + roots + c.sum(1), model.decision_function(X))
    # grouped units are the sums of their features' columns
    A = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], dtype=float)
    assert np.allclose(tree_contributions(model.trees_, apply_bins(X, model.edges_), A), c @ A)


def test_a_feature_no_tree_splits_on_contributes_nothing():
    model, X = _trees()
    used = {int(f) for t in model.trees_ for f in t.feature if f != NO_SPLIT}
    c = tree_contributions(model.trees_, apply_bins(X, model.edges_), np.eye(5))
    for j in set(range(5)) - used:
        assert np.all(c[:, j] == 0.0), j
    assert used and np.any(c[:, sorted(used)] != 0.0)


def test_a_tree_saved_before_node_values_were_kept_asks_for_retraining():
    model, X = _trees()
    old = [Tree(t.depth, t.feature, t.bin, t.leaf_values) for t in model.trees_]
    with pytest.raises(ValueError, match="retrain it for reason codes"):
        tree_contributions(old, apply_bins(X, model.edges_), np.eye(5))
