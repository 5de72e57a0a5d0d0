from __future__ import annotations

import numpy as np
import pytest

from mpc_fl import metrics
from mpc_fl.models.gbdt import (
    NO_SPLIT,
    GBDTParams,
    PlainGBDT,
    apply_bins,
    best_split,
    grow_tree,
    histograms,
    quantile_bin_edges,
    split_gains,
)


def test_bins_respect_thresholds_and_bin_count():
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=1000), rng.integers(0, 3, 1000)]
    edges = quantile_bin_edges(X, 8)
    bins = apply_bins(X, edges)
    assert bins.dtype == np.int8 and bins.max() <= 7
    assert len(np.unique(bins[:, 1])) == 3  # a 3-valued feature keeps exactly its 3 values apart
    for j, e in enumerate(edges):
        for b, edge in enumerate(e):
            assert np.all((X[:, j] < edge) == (bins[:, j] <= b))


def test_histograms_equal_a_direct_sum():
    rng = np.random.default_rng(1)
    bins = rng.integers(0, 4, size=(50, 3)).astype(np.int8)
    g, h = rng.normal(size=50), rng.uniform(size=50)
    G, H = histograms(bins, 4, g, h)
    assert np.allclose(G[2, 1], g[bins[:, 2] == 1].sum())
    assert np.allclose(H.sum(axis=1), h.sum())


def test_gain_prefers_the_separating_split_and_respects_min_child_weight():
    G = np.array([[-5.0, -5.0, 5.0, 5.0]])
    H = np.array([[2.0, 2.0, 2.0, 2.0]])
    gains = split_gains(G, H, reg_lambda=1.0, min_child_weight=1.0)
    assert best_split(gains) == (0, 1)
    assert best_split(split_gains(G, H, 1.0, min_child_weight=100.0)) == (NO_SPLIT, NO_SPLIT)


def test_a_tree_without_valid_splits_sends_all_rows_left():
    bins = np.zeros((10, 1), dtype=np.int8)
    tree = grow_tree(bins, np.ones(10), np.ones(10), GBDTParams(max_depth=2, n_bins=4))
    assert np.all(tree.feature == NO_SPLIT)
    assert np.all(tree.leaf_index(bins) == 0)


def test_default_credit_matches_xgboost_with_the_same_settings(default_credit):
    xgb = pytest.importorskip("xgboost")
    d = default_credit
    params = GBDTParams(n_trees=50, max_depth=4, learning_rate=0.3, n_bins=32)
    own = metrics.auc(
        d["y_test"], PlainGBDT(params).fit(d["X_train"], d["y_train"]).predict_proba(d["X_test"])
    )
    ref = xgb.XGBClassifier(
        n_estimators=50,
        max_depth=4,
        learning_rate=0.3,
        max_bin=32,
        tree_method="hist",
        random_state=42,
        n_jobs=1,
    ).fit(d["X_train"], d["y_train"])
    ref_auc = metrics.auc(d["y_test"], ref.predict_proba(d["X_test"])[:, 1])
    assert abs(own - ref_auc) <= 0.005, (own, ref_auc)
    assert own >= 0.77
