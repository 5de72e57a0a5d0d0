"""SS-GBDT's node-membership leakage (security review F4) is exactly what ``reconstructable_nodes`` says.

No processes: SS-GBDT computes the same trees as the plaintext GBDT on the joint feature list
(the bank's features first; tests/unit/protocols/test_ss_gbdt.py checks that), so the public
owner arrays and each party's own (feature, bin) splits are derived from ``PlainGBDT``. Each
party then attacks with exactly what it receives, and its reconstructions are compared with the
true memberships.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.models.gbdt import (
    NO_SPLIT,
    GBDTParams,
    PlainGBDT,
    Tree,
    apply_bins,
    publicly_empty_nodes,
    quantile_bin_edges,
    reconstructable_by_all,
    reconstructable_nodes,
    reconstructable_summary,
)

PARAMS = GBDTParams(n_trees=10, max_depth=4, n_bins=16)
X_ = NO_SPLIT


def _synthetic(n: int = 600, seed: int = 3) -> tuple[np.ndarray, np.ndarray, int]:
    """Bank 3 features, provider 4; both matter, and categorical columns give no-split nodes."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 7))
    X[:, 1] = rng.integers(0, 3, size=n)
    X[:, 5] = rng.integers(0, 2, size=n)
    z = X[:, 0] - X[:, 3] + 0.7 * (X[:, 1] == 1) + 0.9 * X[:, 4] * X[:, 2] + 0.6 * X[:, 5] - 0.5 * X[:, 6]
    y = (z + rng.logistic(size=n) > 0).astype(float)
    return X, y, 3


def _public_view(
    trees: list[Tree], n_bank: int
) -> tuple[list[np.ndarray], dict[int, list[dict[int, tuple[int, int]]]]]:
    """Owner per internal node (public) and, per party, its own (local feature, bin) per node."""
    owners = [
        np.where(t.feature == NO_SPLIT, NO_SPLIT, (t.feature >= n_bank).astype(np.int64)) for t in trees
    ]
    splits: dict[int, list[dict[int, tuple[int, int]]]] = {0: [], 1: []}
    for t, o in zip(trees, owners, strict=True):
        for p in (0, 1):
            splits[p].append(
                {
                    k: (int(t.feature[k]) - (n_bank if p == 1 else 0), int(t.bin[k]))
                    for k in np.flatnonzero(o == p).tolist()
                }
            )
    return owners, splits


def _true_memberships(tree: Tree, bins: np.ndarray) -> np.ndarray:
    """(nodes, rows) 0/1: which training rows reach each node (heap order, internal then leaves)."""
    n_internal = len(tree.feature)
    rows = np.zeros((2 * n_internal + 1, len(bins)), dtype=bool)
    rows[0] = True
    for k in range(n_internal):
        f, b = tree.feature[k], tree.bin[k]
        left = rows[k] & (bins[:, f] <= b) if f != NO_SPLIT else rows[k]
        rows[2 * k + 1], rows[2 * k + 2] = left, rows[k] & ~left
    return rows


def _attack(
    owners_t: np.ndarray, mine: dict[int, tuple[int, int]], my_bins: np.ndarray, party: int
) -> list[np.ndarray | None]:
    """Every row set ``party`` can deduce from the public owners, its own splits and its own bins.

    None where another party's split intervenes. Independent of ``reconstructable_nodes``: it
    works on row sets (an empty known set stays empty below any split).
    """
    n_internal = len(owners_t)
    rows: list[np.ndarray | None] = [None] * (2 * n_internal + 1)
    rows[0] = np.ones(len(my_bins), dtype=bool)
    for k in range(n_internal):
        parent, o = rows[k], owners_t[k]
        if o == NO_SPLIT:  # every row goes left, whoever knows the parent
            rows[2 * k + 1], rows[2 * k + 2] = parent, np.zeros(len(my_bins), dtype=bool)
        elif parent is not None and not parent.any():
            rows[2 * k + 1], rows[2 * k + 2] = parent, parent
        elif parent is not None and o == party:
            f, b = mine[k]
            left = parent & (my_bins[:, f] <= b)
            rows[2 * k + 1], rows[2 * k + 2] = left, parent & ~left
    return rows


def _best_guess(
    owners_t: np.ndarray, mine: dict[int, tuple[int, int]], my_bins: np.ndarray, party: int
) -> np.ndarray:
    """The party's own-splits-only guess: other parties' splits pass every row to both children."""
    n_internal = len(owners_t)
    rows = np.zeros((2 * n_internal + 1, len(my_bins)), dtype=bool)
    rows[0] = True
    for k in range(n_internal):
        o = owners_t[k]
        if o == NO_SPLIT:
            left = rows[k]
        elif o == party:
            f, b = mine[k]
            left = rows[k] & (my_bins[:, f] <= b)
        else:
            rows[2 * k + 1] = rows[2 * k + 2] = rows[k]
            continue
        rows[2 * k + 1], rows[2 * k + 2] = left, rows[k] & ~left
    return rows


def _data(name: str, request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, int]:
    if name == "synthetic":
        return _synthetic()
    d = request.getfixturevalue(name)
    return d["X_train"], d["y_train"], int(d["n_bank_features"])


@pytest.mark.parametrize("name", ["synthetic", "breast"])
def test_each_party_reconstructs_exactly_the_nodes_the_function_names(
    name: str, request: pytest.FixtureRequest
):
    X, y, n_bank = _data(name, request)
    model = PlainGBDT(PARAMS).fit(X, y)
    joint_bins = apply_bins(X, model.edges_)
    owners, splits = _public_view(model.trees_, n_bank)
    if name == "synthetic":  # no-split nodes on real trees are covered
        assert sum(int((o == NO_SPLIT).sum()) for o in owners) > 0
    own_cols = {0: X[:, :n_bank], 1: X[:, n_bank:]}
    for party in (0, 1):
        # what SS-GBDT's party computes: bins of its own features on its own rows
        my_bins = apply_bins(own_cols[party], quantile_bin_edges(own_cols[party], PARAMS.n_bins))
        masks = reconstructable_nodes(owners, party)
        n_known = n_known_leaves = n_unknown = 0
        for t, tree in enumerate(model.trees_):
            truth = _true_memberships(tree, joint_bins)
            n_internal = len(tree.feature)
            leaf_of_row = np.argmax(truth[n_internal:], axis=0)
            assert np.array_equal(leaf_of_row, tree.leaf_index(joint_bins))  # truth routes like the model
            attacked = _attack(owners[t], splits[party][t], my_bins, party)
            # the stated leakage is exact: reconstructable <=> the attacker gets a set, and it is right
            assert [r is not None for r in attacked] == masks[t].tolist()
            for v, r in enumerate(attacked):
                if r is not None:
                    assert np.array_equal(r, truth[v]), (name, party, t, v)
            # the other party's split matters: at the first node past it, the own-splits guess is wrong
            guess = _best_guess(owners[t], splits[party][t], my_bins, party)
            for v in np.flatnonzero(~masks[t]).tolist():
                parent = (v - 1) // 2
                if masks[t][parent]:
                    assert owners[t][parent] not in (party, NO_SPLIT)
                    assert not np.array_equal(guess[v], truth[v]), (name, party, t, v)
                    n_unknown += 1
            # what a party owning no split gets: the nodes known to all (every row, or none)
            public = _attack(owners[t], {}, my_bins, party=2)
            assert [r is not None for r in public] == reconstructable_by_all(owners)[t].tolist()
            assert all(r.all() or not r.any() for r in public if r is not None)
            for v in range(1, len(attacked)):
                if attacked[v] is not None and public[v] is None:  # learnt beyond what all know
                    assert attacked[v].any(), (name, party, t, v)  # min_child_weight > 0: not empty
                    n_known += 1
                    n_known_leaves += v >= n_internal
        summary = reconstructable_summary(owners, party)
        assert (summary["nodes"], summary["nodes_leaves"]) == (n_known, n_known_leaves), (name, party)
        assert n_known > 0 and n_unknown > 0, (name, party)  # both cases occur for both parties


def test_hand_made_owner_arrays():
    # all owned by party 1: it knows every node, party 0 only the root
    (m1,) = reconstructable_nodes([np.array([1, 1, 1])], 1)
    (m0,) = reconstructable_nodes([np.array([1, 1, 1])], 0)
    assert m1.all() and m0.tolist() == [True] + [False] * 6
    # mixed: party 0 owns the root and its right child
    (m0,) = reconstructable_nodes([np.array([0, 1, 0])], 0)
    assert m0.tolist() == [True, True, True, False, False, True, True]
    (m1,) = reconstructable_nodes([np.array([0, 1, 0])], 1)
    assert m1.tolist() == [True] + [False] * 6


def test_no_split_paths_and_public_empty_nodes():
    # root has no split: node 1 holds every row, node 2 and all below it are empty (for everyone)
    owners = [np.array([X_, 0, X_, 1, 0, X_, X_])]
    (empty,) = publicly_empty_nodes(owners)
    assert np.flatnonzero(empty).tolist() == [2, 5, 6, 11, 12, 13, 14]
    (m0,) = reconstructable_nodes(owners, 0)
    assert np.flatnonzero(~m0).tolist() == [7, 8]  # below party 1's split at node 3
    (m1,) = reconstructable_nodes(owners, 1)
    assert np.flatnonzero(~m1).tolist() == [3, 4, 7, 8, 9, 10]
    # an empty node below another party's split is still known (empty); its sibling is not
    (m0,) = reconstructable_nodes([np.array([1, X_, 1])], 0)
    assert np.flatnonzero(m0).tolist() == [0, 4]
    # counted: what party 0 knows beyond the nodes known to all (the root, node 1 = every row,
    # and the publicly empty 2, 5, 6, 11-14): nodes 3, 4 and leaves 9, 10 under its node 4
    assert np.flatnonzero(reconstructable_by_all(owners)[0]).tolist() == [0, 1, 2, 5, 6, 11, 12, 13, 14]
    assert reconstructable_summary(owners, 0) == {
        "nodes": 4,
        "nodes_internal": 2,
        "nodes_leaves": 2,
        "nodes_total": 14,
        "public": 8,
        # earlier keys, earlier meaning (nodes known to all included)
        "internal": 6,
        "internal_total": 6,
        "leaves": 6,
        "leaves_total": 8,
        "empty": 7,
    }
    # party 1: in the first tree nothing beyond the nodes known to all (party 0's node 1 is above
    # its node 3); in the second every non-root node but the leaves 7, 8 below party 0's node 3
    assert reconstructable_summary(owners + [np.array([1, 1, 1, 0, 1, 1, 1])], 1) == {
        "nodes": 0 + 12,
        "nodes_internal": 0 + 6,
        "nodes_leaves": 0 + 6,
        "nodes_total": 28,
        "public": 8,
        "internal": 4 + 6,
        "internal_total": 12,
        "leaves": 4 + 6,
        "leaves_total": 16,
        "empty": 7,
    }


def test_rejects_incomplete_trees_and_bad_ranks():
    with pytest.raises(ValueError, match="2\\*\\*depth - 1"):
        reconstructable_nodes([np.array([0, 1])], 0)
    with pytest.raises(ValueError, match="rank"):
        reconstructable_nodes([np.array([0])], -1)


def test_run_info_reports_counts_per_role():
    from mpc_fl.protocols.base import VerticalProtocol
    from mpc_fl.protocols.ss_gbdt import SecretSharedGBDT

    assert VerticalProtocol.run_info(SecretSharedGBDT()) == {}  # default: nothing to report
    proto = SecretSharedGBDT()
    assert proto.run_info() == {}  # before fit
    proto.owners_ = [np.array([0, 1, 0]), np.array([1, X_, 1])]
    proto.roles_ = ("bank", "provider")
    info = proto.run_info()["reconstructable_nodes"]
    # bank: nodes 1, 2 and leaves 5, 6 of the first tree (leaf 4 of the second is publicly empty)
    assert info["bank"] == {
        "nodes": 4,
        "nodes_internal": 2,
        "nodes_leaves": 2,
        "nodes_total": 12,
        "public": 1,
        "internal": 2,
        "internal_total": 4,
        "leaves": 2 + 1,
        "leaves_total": 8,
        "empty": 1,
    }
    # provider: nodes 1, 2 and leaves 3, 5, 6 of the second tree (leaf 3 has node 1's rows: no
    # split; leaf 4 is publicly empty)
    assert info["provider"] == {
        "nodes": 5,
        "nodes_internal": 2,
        "nodes_leaves": 3,
        "nodes_total": 12,
        "public": 1,
        "internal": 2,
        "internal_total": 4,
        "leaves": 4,
        "leaves_total": 8,
        "empty": 1,
    }
