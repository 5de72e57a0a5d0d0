"""Monotone constraints: parsing each party's own, and the plaintext twins' enforcement (trees, LR)."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.models.gbdt import GBDTParams, PlainGBDT, split_gains
from mpc_fl.models.lr import LRParams, PlainLR
from mpc_fl.models.monotone import grid_violations, parse, signs, split_among


def test_parse_accepts_the_written_forms_and_refuses_the_rest():
    assert parse("a:+1, b:-1,c:increasing,d:decreasing,e:0") == {"a": 1, "b": -1, "c": 1, "d": -1, "e": 0}
    assert parse("") == {}
    for bad in ("a", "a:2", ":+1", "a:+1,a:-1"):
        with pytest.raises(ValueError, match="monotone"):
            parse(bad)


def test_a_party_constrains_only_its_own_features():
    assert signs("b:-1", ("a", "b", "c")).tolist() == [0, -1, 0]
    with pytest.raises(ValueError, match="not among this party's features"):
        signs("z:+1", ("a", "b"))
    assert split_among("a:+1,p:-1", {"bank": ("a",), "provider": ("p", "q")}) == {
        "bank": "a:+1",
        "provider": "p:-1",
    }
    with pytest.raises(ValueError, match="no party's feature"):
        split_among("zz:+1", {"bank": ("a",)})
    both = {"bank": ("x0", "x1"), "provider": ("x0",)}  # default_credit's parties share names
    assert split_among("bank.x0:-1,provider.x0:+1,x1:+1", both) == {
        "bank": "x0:-1,x1:+1",
        "provider": "x0:+1",
    }
    with pytest.raises(ValueError, match="name it as bank.x0 or provider.x0"):
        split_among("x0:+1", both)


def _data(n: int = 3000, seed: int = 0):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    z = np.sin(2 * X[:, 0]) + X[:, 1] - 0.5 * X[:, 2] ** 2 + X[:, 3] * X[:, 4]
    return X, (z + rng.logistic(size=n) > 0).astype(float)


def _violations(score, X: np.ndarray, c: np.ndarray) -> int:  # noqa: ANN001
    grid = np.sort(np.quantile(X, np.linspace(0, 1, 25), axis=0), axis=0)
    return sum(grid_violations(score, X[:200], j, int(s), grid[:, j]) for j, s in enumerate(c))


def test_constrained_trees_are_monotone_where_unconstrained_ones_are_not():
    X, y = _data()
    c = np.array([1, 1, -1, 0, 0])
    params = GBDTParams(n_trees=10, max_depth=4)
    assert _violations(PlainGBDT(params).fit(X, y).decision_function, X, c) > 0  # the check can fail
    assert _violations(PlainGBDT(params, c).fit(X, y).decision_function, X, c) == 0


def test_a_split_whose_children_go_the_wrong_way_is_invalid():
    # one feature, two bins: left child all g = +1 (weight < 0), right all g = -1 (weight > 0)
    G, H = np.array([[4.0, -4.0]]), np.array([[1.0, 1.0]])
    assert np.isfinite(split_gains(G, H, 1.0, 0.0, np.array([1]))).all()
    assert not np.isfinite(split_gains(G, H, 1.0, 0.0, np.array([-1]))).any()


def test_sign_constrained_lr_keeps_each_weight_on_its_sign():
    X, y = _data()
    c = np.array([0, -1, 1, 0, 0])  # against x1's positive effect; x2's effect is nil on average
    free = PlainLR(LRParams()).fit(X, y)
    bound = PlainLR(LRParams(), c).fit(X, y)
    assert free.coef_[1] > 0 and bound.coef_[1] <= 0 and bound.coef_[2] >= 0
    assert _violations(bound.decision_function, X, c) == 0


def test_tree_importance_sums_each_features_split_gains_and_counts_its_splits():
    from mpc_fl.models.gbdt import NO_SPLIT, importance

    X, y = _data(n=800)
    model = PlainGBDT(GBDTParams(n_trees=3, max_depth=3)).fit(X, y)
    got = importance(model.trees_, X.shape[1])
    for f in range(X.shape[1]):
        nodes = [(t, k) for t in model.trees_ for k in range(len(t.feature)) if t.feature[k] == f]
        assert got["splits"][f] == len(nodes)
        assert got["gain"][f] == pytest.approx(sum(t.gains[k] for t, k in nodes))
    assert all(
        (t.gains[t.feature == NO_SPLIT] == 0).all() and (t.gains[t.feature != NO_SPLIT] >= 0).all()
        for t in model.trees_
    )
