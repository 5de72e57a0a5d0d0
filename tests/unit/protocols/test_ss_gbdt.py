"""SS-GBDT reproduces the plaintext GBDT (same splits, same scores) with two or three parties and the dealer."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl import metrics
from mpc_fl.models.gbdt import NO_SPLIT, GBDTParams, PlainGBDT
from mpc_fl.protocols.base import LocalData
from mpc_fl.protocols.ss_gbdt import SecretSharedGBDT
from mpc_fl.runtime.local import run_local
from tests.budget import budget_s


def _run(X_bank, X_prov, y, X_bank_te, X_prov_te, params: GBDTParams, mask: str = "fixed") -> dict:
    def fn(session):  # noqa: ANN001, ANN202
        mine = X_bank if session.role == "bank" else X_prov
        mine_te = X_bank_te if session.role == "bank" else X_prov_te
        proto = SecretSharedGBDT(params, mask=mask)
        proto.fit(session, LocalData(mine, y if session.role == "bank" else None))
        p = proto.predict_proba(session, LocalData(mine_te))
        return {"p": p, "owners": [o.tolist() for o in proto.owners_], "splits": proto.splits_}

    return run_local(fn, timeout_s=budget_s(60))


def _secure_trees(res: dict, d_bank: int) -> list[list[tuple[int, int]]]:
    """Joint (feature, bin) per node, assembled from what each party learnt (for the test only)."""
    trees = []
    for t, owners in enumerate(res["bank"]["result"]["owners"]):
        nodes = []
        for node, owner in enumerate(owners):
            if owner == NO_SPLIT:
                nodes.append((NO_SPLIT, NO_SPLIT))
                continue
            role = "bank" if owner == 0 else "provider"
            f, b = res[role]["result"]["splits"][t][node]
            nodes.append((f + (d_bank if owner == 1 else 0), b))
        trees.append(nodes)
    return trees


def _check_against_plaintext(res, X_tr, y_tr, X_te, d_bank, params) -> None:  # noqa: ANN001
    plain = PlainGBDT(params).fit(X_tr, y_tr)
    expected = [list(zip(t.feature.tolist(), t.bin.tolist(), strict=True)) for t in plain.trees_]
    assert _secure_trees(res, d_bank) == expected
    # the provider knows split ownership but not the other party's splits
    assert res["provider"]["result"]["owners"] == res["bank"]["result"]["owners"]
    p_sec = res["bank"]["result"]["p"]
    np.testing.assert_allclose(p_sec, plain.predict_proba(X_te), atol=2e-3)


def _synthetic(n: int = 320, seed: int = 0):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[:, 2] = rng.integers(0, 3, size=n)  # a categorical column: few distinct values, empty bins
    z = 1.5 * X[:, 0] - X[:, 3] + 0.8 * (X[:, 2] == 1) + 0.5 * X[:, 5] * X[:, 4]
    y = (z + rng.logistic(size=n) > 0).astype(float)
    return X[: n * 3 // 4], y[: n * 3 // 4], X[n * 3 // 4 :], y[n * 3 // 4 :]


def test_fixed_mask_matches_plaintext_on_synthetic_data():
    X_tr, y_tr, X_te, _ = _synthetic()
    params = GBDTParams(
        n_trees=2, max_depth=3, n_bins=16, learning_rate=0.3, reg_lambda=1.0, min_child_weight=1.0
    )
    res = _run(X_tr[:, :3], X_tr[:, 3:], y_tr, X_te[:, :3], X_te[:, 3:], params)
    _check_against_plaintext(res, X_tr, y_tr, X_te, 3, params)
    assert res["provider"]["result"]["p"] is None  # only the bank learns scores
    by_phase = res["bank"]["ledger"]["by_phase"]
    assert {"setup", "training", "scoring"} <= set(by_phase)


def test_generic_mask_matches_plaintext_on_tiny_data():
    X_tr, y_tr, X_te, _ = _synthetic(n=160, seed=1)
    params = GBDTParams(n_trees=1, max_depth=2, n_bins=8)
    res = _run(X_tr[:, :2], X_tr[:, 2:], y_tr, X_te[:, :2], X_te[:, 2:], params, mask="generic")
    _check_against_plaintext(res, X_tr, y_tr, X_te, 2, params)
    assert res["provider"]["result"]["p"] is None


def test_breast_same_trees_and_auc(breast):
    d_bank = int(breast["n_bank_features"])
    X_tr, X_te, y_tr, y_te = breast["X_train"], breast["X_test"], breast["y_train"], breast["y_test"]
    params = GBDTParams(n_trees=3, max_depth=2, n_bins=32)
    res = _run(X_tr[:, :d_bank], X_tr[:, d_bank:], y_tr, X_te[:, :d_bank], X_te[:, d_bank:], params)
    _check_against_plaintext(res, X_tr, y_tr, X_te, d_bank, params)
    plain_auc = metrics.auc(y_te, PlainGBDT(params).fit(X_tr, y_tr).predict_proba(X_te))
    assert abs(metrics.auc(y_te, res["bank"]["result"]["p"]) - plain_auc) < 0.005
    assert res["provider"]["result"]["p"] is None


@pytest.mark.parametrize(
    ("kwargs", "params"),
    [
        ({"mask": "bogus"}, GBDTParams()),
        ({}, GBDTParams(reg_lambda=0.0)),
        ({"mask": "generic", "oblivious": True}, GBDTParams()),
    ],
)
def test_rejects_bad_settings_before_any_traffic(kwargs, params):  # noqa: ANN001
    proto = SecretSharedGBDT(params, **kwargs)
    with pytest.raises(ValueError):
        proto.fit(None, LocalData(np.zeros((4, 1)), np.zeros(4)))


def test_params_dict():
    d = SecretSharedGBDT(GBDTParams(n_trees=3), mask="generic").params_dict()
    assert d["n_trees"] == 3 and d["mask"] == "generic" and SecretSharedGBDT.name == "ss_gbdt"


@pytest.mark.parametrize("oblivious", [False, True])
def test_three_parties_match_plaintext(oblivious):
    X_tr, y_tr, X_te, _ = _synthetic(n=240, seed=2)
    params = GBDTParams(n_trees=2, max_depth=2, n_bins=8)
    cols = {"bank": slice(0, 2), "provider1": slice(2, 4), "provider2": slice(4, 6)}

    def fn(session):  # noqa: ANN001, ANN202
        c = cols[session.role]
        proto = SecretSharedGBDT(params, oblivious=oblivious)
        proto.fit(session, LocalData(X_tr[:, c], y_tr if session.role == "bank" else None))
        return proto.predict_proba(session, LocalData(X_te[:, c]))

    res = run_local(fn, tuple(cols), timeout_s=600)
    plain = PlainGBDT(params).fit(X_tr, y_tr)
    np.testing.assert_allclose(res["bank"]["result"], plain.predict_proba(X_te), atol=2e-3)
    assert res["provider1"]["result"] is None and res["provider2"]["result"] is None


def test_tournament_finds_the_first_maximum():
    """The 4-way argmax on shares: first maximum on ties, any width (padding), one candidate."""
    rows = [
        [0.5, 2.0, 2.0, -1.0, 2.0],  # tie: the first 2.0 wins
        [-1.0, -1.0, -1.0, -1.0, -1.0],  # all equal: the first
        [0.0, 0.1, 0.2, 0.3, 3.25],  # the last
    ]
    wide = np.round(np.random.default_rng(3).normal(size=(2, 70)), 3)
    wide[1, [17, 40]] = 5.0  # a tie across groups of four

    def fn(session):  # noqa: ANN001, ANN202
        import torch

        from mpc_fl.crypto.secure_crypten import crypten
        from mpc_fl.crypto.share_math import argmax_first

        out = []
        for x in (rows, wide.tolist(), [[1.5], [0.0]]):
            onehot = argmax_first(crypten.cryptensor(torch.tensor(x), src=0))
            out.append(onehot.get_plain_text().round().long().tolist())
        return out

    res = run_local(fn, timeout_s=120)["bank"]["result"]
    for x, onehot in zip((rows, wide.tolist(), [[1.5], [0.0]]), res, strict=True):
        expected = np.eye(len(x[0]), dtype=int)[np.argmax(np.array(x), axis=1)]  # numpy: first maximum
        assert np.array_equal(np.array(onehot), expected)


def _decode_routes(routes: list[np.ndarray], widths: list[int], n_bins: int, n_trees: int) -> list:
    """Joint (feature, bin) per node from opened routing vectors (the test opens them; no party does)."""
    n_nodes = routes[-1].shape[1] // n_trees
    trees = []
    for t in range(n_trees):
        nodes = []
        for j in range(t * n_nodes, (t + 1) * n_nodes):
            if routes[-1][0, j] == 1:
                nodes.append((NO_SPLIT, NO_SPLIT))
                continue
            found = []
            for q, d in enumerate(widths):
                v = routes[q][:, j].reshape(d, n_bins)
                for f in np.flatnonzero(v[:, 0]):
                    found.append((sum(widths[:q]) + int(f), int(v[f].sum()) - 1))
            assert len(found) == 1, found  # exactly one split per node
            nodes.append(found[0])
        trees.append(nodes)
    return trees


def test_oblivious_mode_matches_plaintext_and_reveals_no_split():
    X_tr, y_tr, X_te, _ = _synthetic()
    params = GBDTParams(n_trees=2, max_depth=3, n_bins=16)

    def fn(session):  # noqa: ANN001, ANN202
        cols = slice(0, 3) if session.role == "bank" else slice(3, 6)
        proto = SecretSharedGBDT(params, oblivious=True)
        proto.fit(session, LocalData(X_tr[:, cols], y_tr if session.role == "bank" else None))
        p = proto.predict_proba(session, LocalData(X_te[:, cols]))
        routes = [r.get_plain_text().round().long().numpy() for r in proto.routes_]  # opened by the test
        return {
            "p": p,
            "owners": proto.owners_,
            "splits": proto.splits_,
            "routes": routes,
            "info": proto.run_info(),
        }

    res = run_local(fn, timeout_s=budget_s(60))
    bank, prov = res["bank"]["result"], res["provider"]["result"]
    assert bank["owners"] == [] and bank["splits"] == [] and prov["owners"] == [] and prov["splits"] == []
    assert prov["p"] is None
    assert bank["info"]["oblivious"] and bank["info"]["reconstructable_nodes"]["provider"]["internal"] == 0
    plain = PlainGBDT(params).fit(X_tr, y_tr)
    expected = [list(zip(t.feature.tolist(), t.bin.tolist(), strict=True)) for t in plain.trees_]
    assert _decode_routes(bank["routes"], [3, 3], 16, 2) == expected
    np.testing.assert_allclose(bank["p"], plain.predict_proba(X_te), atol=2e-3)


def test_independent_products_share_one_round_and_stay_exact_where_an_operand_is_an_integer():
    """``share_math.products``: bit x value pairs exact (no truncation), value x value pairs truncated, one opening."""

    def fn(session):  # noqa: ANN001, ANN202
        import torch

        from mpc_fl.crypto.secure_crypten import crypten
        from mpc_fl.crypto.share_math import products

        bits = crypten.cryptensor(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), precision=0)
        vals = crypten.cryptensor(torch.tensor([[2.5, -1.25], [1e-4, -300.0]]))
        x = crypten.cryptensor(torch.tensor([1.5, -2.0, 0.1]))
        led = session.channel.ledger
        with session.channel.phase("scoring"):
            exact, fixed = products([(bits, vals), (x, x)])
        rounds = led.by_phase["scoring"].rounds
        return {
            "exact_raw": exact._tensor.reveal().tolist(),  # the ring integers: bit times encoded value
            "vals_raw": vals._tensor.reveal().tolist(),
            "exact_precision": exact._tensor.encoder.scale,
            "fixed": fixed.get_plain_text().tolist(),
            "rounds": rounds,
        }

    res = run_local(fn, timeout_s=120)
    for role, r in res.items():
        out = r["result"]
        want = (np.array([[1, 0], [1, 1]]) * np.array(out["vals_raw"])).tolist()
        assert out["exact_raw"] == want and out["exact_precision"] == 2**16, role
        np.testing.assert_allclose(out["fixed"], [2.25, 4.0, 0.01], atol=1e-4)
        # one opening (plus the bank's dealer request: three calls)
        assert out["rounds"] == 1 + (3 if role == "bank" else 0), out["rounds"]


#: constraints that bind on _synthetic's data: x2 is categorical with its effect at 1 only, x3's true
#: effect is negative (so +1 flattens it), x4 enters through a product
_MONOTONE = {"bank": "x0:+1,x2:+1", "provider": "x3:+1,x4:-1"}
_JOINT_SIGNS = np.array([1, 0, 1, 1, -1, 0])


def _grid_rows(X: np.ndarray, j: int, grid: np.ndarray) -> np.ndarray:
    rows = np.repeat(X, len(grid), axis=0)
    rows[:, j] = np.tile(grid, len(X))
    return rows


@pytest.mark.parametrize("oblivious", [False, True])
def test_monotone_constraints_give_the_plaintext_twins_trees_and_monotone_scores(oblivious):
    """Each party constrains its own features; the trees are PlainGBDT's with the joint constraints,
    and scoring (the real secure path) never moves the wrong way along any constrained feature."""
    X_tr, y_tr, X_te, _ = _synthetic()
    names = tuple(f"x{j}" for j in range(6))
    params = GBDTParams(n_trees=3, max_depth=3, n_bins=16)
    grids = {j: np.unique(np.quantile(X_tr[:, j], np.linspace(0, 1, 12))) for j in (0, 2, 3, 4)}

    def fn(session):  # noqa: ANN001, ANN202
        cols = slice(0, 3) if session.role == "bank" else slice(3, 6)
        own = names[cols]
        proto = SecretSharedGBDT(params, oblivious=oblivious, monotone=_MONOTONE[session.role])
        proto.fit(session, LocalData(X_tr[:, cols], y_tr if session.role == "bank" else None, own))
        scored = {
            j: proto.decision_function(session, LocalData(_grid_rows(X_te[:16], j, g)[:, cols], None, own))
            for j, g in grids.items()
        }
        routes = [r.get_plain_text().round().long().numpy() for r in proto.routes_]  # opened by the test
        return {"grid": scored, "owners": [o.tolist() for o in proto.owners_], "splits": proto.splits_,
                "routes": routes, "info": proto.run_info(), "params": proto.params_dict()}  # fmt: skip

    res = run_local(fn, timeout_s=budget_s(90))
    bank = res["bank"]["result"]
    twin = PlainGBDT(params, _JOINT_SIGNS).fit(X_tr, y_tr)
    expected = [list(zip(t.feature.tolist(), t.bin.tolist(), strict=True)) for t in twin.trees_]
    got = _decode_routes(bank["routes"], [3, 3], 16, 3) if oblivious else _secure_trees(res, 3)
    assert got == expected
    assert expected != [  # the constraints changed the trees: the comparison above means something
        list(zip(t.feature.tolist(), t.bin.tolist(), strict=True))
        for t in PlainGBDT(params).fit(X_tr, y_tr).trees_
    ]
    for j, g in grids.items():
        margins = bank["grid"][j].reshape(16, len(g))
        np.testing.assert_allclose(
            margins, twin.decision_function(_grid_rows(X_te[:16], j, g)).reshape(16, -1), atol=2e-3
        )
        assert (_JOINT_SIGNS[j] * np.diff(margins, axis=1) >= 0).all(), f"x{j} moves the wrong way"
    # each party reports its own constraints only; they are in no handshake-compared parameter
    assert bank["info"]["monotone"] == {"x0": 1, "x2": 1}
    assert res["provider"]["result"]["info"]["monotone"] == {"x3": 1, "x4": -1}
    assert "monotone" not in bank["params"]


def test_monotone_grid_check_flags_an_unconstrained_model():
    """Positive control for the grid check above: without constraints, the same data moves x3 the
    wrong way (its true effect is negative), so the check can fail."""
    X_tr, y_tr, X_te, _ = _synthetic()
    model = PlainGBDT(GBDTParams(n_trees=3, max_depth=3, n_bins=16)).fit(X_tr, y_tr)
    g = np.unique(np.quantile(X_tr[:, 3], np.linspace(0, 1, 12)))
    margins = model.decision_function(_grid_rows(X_te[:16], 3, g)).reshape(16, -1)
    assert (np.diff(margins, axis=1) < 0).any()


def test_monotone_constraint_on_another_partys_feature_is_refused_before_any_traffic():
    proto = SecretSharedGBDT(GBDTParams(), monotone="x9:+1")
    with pytest.raises(ValueError, match="not among this party's features"):
        proto.fit(None, LocalData(np.zeros((4, 2)), np.zeros(4), ("x0", "x1")))


@pytest.mark.parametrize("oblivious", [False, True])
def test_feature_importance_is_the_twins_and_each_party_gets_its_own(oblivious):
    from mpc_fl.models.gbdt import importance

    X_tr, y_tr, _, _ = _synthetic()
    params = GBDTParams(n_trees=3, max_depth=3, n_bins=16)

    def fn(session):  # noqa: ANN001, ANN202
        cols = slice(0, 3) if session.role == "bank" else slice(3, 6)
        proto = SecretSharedGBDT(params, oblivious=oblivious)
        proto.fit(session, LocalData(X_tr[:, cols], y_tr if session.role == "bank" else None))
        return proto.feature_importance(session)

    res = run_local(fn, timeout_s=budget_s(60))
    twin = importance(PlainGBDT(params).fit(X_tr, y_tr).trees_, 6)
    for role, cols in (("bank", slice(0, 3)), ("provider", slice(3, 6))):
        got = res[role]["result"]
        np.testing.assert_array_equal(got["splits"], twin["splits"][cols])
        np.testing.assert_allclose(got["gain"], twin["gain"][cols], rtol=5e-3, atol=0.02)
