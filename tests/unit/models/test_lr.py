from __future__ import annotations

import numpy as np
import pytest

from mpc_fl import metrics
from mpc_fl.models.lr import LRParams, PlainLR, minibatches, n_iterations, sigmoid


def test_minibatches_cover_every_row_once_per_epoch():
    batches = list(minibatches(10, 4, 2, seed=1))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(batches[:3])) == list(range(10))
    assert n_iterations(10, LRParams(batch_size=4, n_epochs=2)) == len(batches)


def test_same_seed_same_model_and_different_seed_differs():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 2, 300)
    a = PlainLR(LRParams(seed=3, batch_size=32)).fit(X, y).coef_
    b = PlainLR(LRParams(seed=3, batch_size=32)).fit(X, y).coef_
    c = PlainLR(LRParams(seed=4, batch_size=32)).fit(X, y).coef_
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("method", ["hard", "taylor1"])
def test_cheap_sigmoids_are_tangent_to_the_logistic_at_zero(method):
    z = np.array([-0.01, 0.0, 0.01])
    assert np.allclose(sigmoid(z, method), sigmoid(z, "exact"), atol=1e-5)


def test_bad_parameters_name_the_parameter():
    with pytest.raises(ValueError, match="sigmoid"):
        PlainLR(LRParams(sigmoid="tanh")).fit(np.zeros((2, 1)), np.array([0, 1]))
    with pytest.raises(ValueError, match="learning_rate"):
        PlainLR(LRParams(learning_rate=0)).fit(np.zeros((2, 1)), np.array([0, 1]))


def test_default_credit_auc_reaches_the_reference(default_credit):
    d = default_credit
    model = PlainLR(LRParams()).fit(d["X_train"], d["y_train"])
    assert metrics.auc(d["y_test"], model.predict_proba(d["X_test"])) >= 0.70  # lbfgs reference: 0.7076
