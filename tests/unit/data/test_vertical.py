from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.data.errors import DataError
from mpc_fl.data.party_table import PartyTable
from mpc_fl.data.vertical import Standardizer, common_rows_sorted, join_on_ids, stratified_split


def table(ids, role="provider", y=None):
    ids = np.asarray(ids)
    return PartyTable(
        role, ids, ids[:, None].astype(float) * 10, ("f",), None if y is None else np.asarray(y)
    )


def test_join_keeps_common_ids_sorted_and_rows_aligned():
    bank = table([5, 1, 3, 9], role="bank", y=[1, 0, 1, 0])
    prov = table([3, 7, 5, 1])
    b, p = join_on_ids(bank, prov)
    assert b.ids.tolist() == p.ids.tolist() == [1, 3, 5]
    assert np.array_equal(b.X, p.X) and b.y.tolist() == [0, 1, 1]


def test_join_without_common_customers_is_an_error():
    with pytest.raises(DataError, match="no customers in common"):
        join_on_ids(table([1, 2], role="bank", y=[0, 1]), table([3, 4]))


def test_common_rows_sorted_rejects_unknown_ids():
    with pytest.raises(DataError):
        common_rows_sorted(np.array([1, 2, 3]), np.array([2, 4]))


def test_split_is_stratified_and_fixed():
    y = np.r_[np.zeros(80, int), np.ones(20, int)]
    train, test = stratified_split(y)
    assert len(test) == 20 and y[test].sum() == 4
    assert np.array_equal(stratified_split(y)[1], test)


def test_standardizer_uses_train_statistics_and_survives_constant_columns():
    X = np.c_[np.arange(4.0), np.ones(4)]
    s = Standardizer.fit(X[:2])
    assert np.allclose(s.transform(X[:2]), [[-1, 0], [1, 0]])
    assert np.all(np.isfinite(s.transform(X)))


def test_robust_scaler_bounds_heavy_tails_keeps_unit_variance_and_uses_train_statistics():
    from mpc_fl.data.vertical import RobustScaler

    gen = np.random.default_rng(0)
    X = np.c_[gen.lognormal(0, 2.5, 5000), (gen.random(5000) < 0.0002).astype(float), np.ones(5000)]
    s = RobustScaler.fit(X[:4000])
    Z = s.transform(X)
    assert np.abs(Z).max() <= s.bound
    assert np.allclose(Z[:4000, 0].std(), 1.0) and np.all(Z[:, 2] == 0)
    # a scoring row far beyond anything seen in training is clipped, never passed through
    far = s.transform(np.array([[1e12, 1.0, 1.0], [-1e12, 0.0, 1.0]]))
    assert np.abs(far).max() <= s.bound
    assert s.transform(X[4000:4001]).tolist() == RobustScaler.fit(X[:4000]).transform(X[4000:4001]).tolist()
