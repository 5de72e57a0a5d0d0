from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score, roc_curve

from mpc_fl import metrics


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    score = np.round(y * 0.8 + rng.normal(size=500), 1)  # rounded: many ties
    return y, score


def test_auc_and_ks_match_scikit_learn_with_ties(scored):
    y, score = scored
    assert metrics.auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, score)
    assert metrics.ks(y, score) == pytest.approx(np.max(tpr - fpr), abs=1e-12)


def test_log_loss_matches_scikit_learn(scored):
    y, score = scored
    p = 1 / (1 + np.exp(-score))
    assert metrics.log_loss(y, p) == pytest.approx(sk_log_loss(y, p), rel=1e-9)


def test_precision_and_lift_at_k():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    score = np.arange(10)[::-1].astype(float)  # row 0 highest
    assert metrics.precision_at_k(y, score, 2) == 0.5
    assert metrics.precision_at_k(y, score, 3) == pytest.approx(2 / 3)
    assert metrics.lift_at_k(y, score, 3) == pytest.approx((2 / 3) / 0.2)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="length"):
        metrics.auc(np.array([0, 1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="k must be"):
        metrics.precision_at_k(np.array([0, 1]), np.array([0.1, 0.2]), 3)
