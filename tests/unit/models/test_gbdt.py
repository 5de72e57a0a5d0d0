from __future__ import annotations

from collections.abc import Callable

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
    publicly_empty_nodes,
    quantile_bin_edges,
    reconstructable_by_all,
    reconstructable_nodes,
    reconstructable_summary,
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


# Reconstructable-node counts on hand-built trees (depth 2: internal nodes 0-2, leaves 3-6).
X_ = NO_SPLIT
HAND_TREES = [
    # A: party 0 owns the root and node 2; node 1 is party 1's. Party 0 knows 1, 2 and the leaves
    # 5, 6 under its own node 2; party 1 knows nothing (party 0's split is above everything).
    np.array([0, 1, 0]),
    # B: node 1 has no split: leaf 3 gets all of node 1's rows, leaf 4 is publicly empty. Party 1
    # knows 1, 2 and leaf 3 (not leaf 4: everyone knows it is empty); party 0 knows nothing.
    np.array([1, X_, 0]),
    # C: the root has no split: node 1 holds every row (known to all, like the root), node 2 and
    # its leaves 5, 6 are publicly empty. Party 0 knows the leaves 3, 4 under its node 1.
    np.array([X_, 0, X_]),
]
#: by hand, per party and tree: (nodes, nodes_internal, nodes_leaves)
HAND_COUNTS = {0: [(4, 2, 2), (0, 0, 0), (2, 0, 2)], 1: [(0, 0, 0), (3, 2, 1), (0, 0, 0)]}


def _check_hand_counts(count: Callable) -> None:
    """``count(owners, party) -> (nodes, nodes_internal, nodes_leaves)`` must give the hand counts."""
    for party, per_tree in HAND_COUNTS.items():
        for owners_t, expected in zip(HAND_TREES, per_tree, strict=True):
            assert tuple(count([owners_t], party)) == expected, (party, owners_t)
        assert tuple(count(HAND_TREES, party)) == tuple(np.sum(per_tree, axis=0)), party


def _summary_counts(owners: list[np.ndarray], party: int) -> tuple[int, int, int]:
    s = reconstructable_summary(owners, party)
    return s["nodes"], s["nodes_internal"], s["nodes_leaves"]


def test_reconstructable_summary_counts_hand_built_trees():
    _check_hand_counts(_summary_counts)
    s0, s1 = (reconstructable_summary(HAND_TREES, p) for p in (0, 1))
    # totals: 3 trees of 6 non-root nodes; known to all: B's leaf 4, C's nodes 1, 2, 5, 6
    assert s0["nodes_total"] == s1["nodes_total"] == 18
    assert s0["public"] == s1["public"] == 1 + 4
    assert [np.flatnonzero(m).tolist() for m in reconstructable_by_all(HAND_TREES)] == [
        [0],
        [0, 4],
        [0, 1, 2, 5, 6],
    ]
    # the earlier keys keep their meaning: masks including the nodes known to all
    assert {k: s0[k] for k in ("internal", "internal_total", "leaves", "leaves_total", "empty")} == {
        "internal": 2 + 0 + 2,
        "internal_total": 6,
        "leaves": 2 + 1 + 4,
        "leaves_total": 12,
        "empty": 0 + 1 + 3,
    }
    assert (s1["internal"], s1["leaves"]) == (0 + 2 + 2, 0 + 2 + 2)


def test_reconstructable_by_all_is_what_a_party_owning_nothing_knows():
    rng = np.random.default_rng(1)
    for _ in range(50):
        owners = [rng.choice([X_, 0, 1], size=15, p=[0.3, 0.35, 0.35]) for _ in range(3)]
        nobody = reconstructable_nodes(owners, 2)
        for by_all, nob, empty in zip(
            reconstructable_by_all(owners), nobody, publicly_empty_nodes(owners), strict=True
        ):
            assert np.array_equal(by_all, nob)
            assert not (empty & ~by_all).any()
        for p in (0, 1):
            s = reconstructable_summary(owners, p)
            assert s["nodes"] == s["nodes_internal"] + s["nodes_leaves"] <= s["nodes_total"] - s["public"]
            assert s["internal"] + s["leaves"] == s["nodes"] + s["public"]


def _count(
    known_of: Callable = reconstructable_nodes,
    drop: Callable = reconstructable_by_all,
    *,
    root: bool = False,
    leaves: bool = True,
) -> Callable:
    """The count written out from masks: ``known_of(owners, party)`` minus ``drop(owners)``.

    With the defaults it is the right count; the other arguments make the miscounts below.
    """

    def count(owners: list[np.ndarray], party: int) -> tuple[int, int, int]:
        internal = n_leaves = 0
        for o, known, dropped in zip(owners, known_of(owners, party), drop(owners), strict=True):
            m = known & ~dropped
            m[0] |= root
            internal += int(m[int(not root) : len(o)].sum())
            n_leaves += int(m[len(o) :].sum()) if leaves else 0
        return internal + n_leaves, internal, n_leaves

    return count


def _no_split_blocks(owners: list[np.ndarray], party: int) -> list[np.ndarray]:
    """Wrong masks: a no-split node stops the chain (its left child's rows are not inherited)."""
    return reconstructable_nodes([np.where(o == X_, -2, o) for o in owners], party)


def _nothing(owners: list[np.ndarray]) -> list[np.ndarray]:
    return [np.zeros(2 * len(o) + 1, bool) for o in owners]


MISCOUNTS = {
    "counts publicly empty nodes": _count(drop=_nothing),
    "takes only publicly empty nodes as known to all": _count(drop=publicly_empty_nodes),
    "counts the root": _count(root=True),
    "leaves out leaves": _count(leaves=False),
    "a no-split node blocks the path": _count(known_of=_no_split_blocks),
}


def test_the_written_out_count_agrees_with_the_summary():
    _check_hand_counts(_count())  # positive control for the miscounts: the same code, right arguments
    rng = np.random.default_rng(2)
    for _ in range(50):
        owners = [rng.choice([X_, 0, 1], size=15, p=[0.3, 0.35, 0.35]) for _ in range(3)]
        for p in (0, 1):
            assert _count()(owners, p) == _summary_counts(owners, p)


@pytest.mark.parametrize("count", MISCOUNTS.values(), ids=MISCOUNTS.keys())
def test_hand_counts_catch_a_miscount(count: Callable):
    with pytest.raises(AssertionError):
        _check_hand_counts(count)
