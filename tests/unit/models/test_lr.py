from __future__ import annotations

import numpy as np
import pytest

from mpc_fl import metrics
from mpc_fl.models.lr import LRParams, PlainLR, minibatches, n_iterations, schedule, sigmoid


def test_minibatches_cover_every_row_once_per_epoch():
    batches = list(minibatches(10, 4, 2, seed=1))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(batches[:3])) == list(range(10))
    assert n_iterations(10, LRParams(batch_size=4, n_epochs=2, min_iterations=0)) == len(batches)


def test_small_data_gets_more_epochs_to_reach_min_iterations():
    p = LRParams(batch_size=100, n_epochs=3, min_iterations=50)
    assert n_iterations(250, p) == 51 and len(list(schedule(250, p))) == 51  # 17 epochs of 3 batches
    assert n_iterations(24_000, LRParams()) == 72  # large data: the plain 3-epoch schedule


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


def _ours_and_sklearn(bank, provider) -> tuple[float, float]:
    """Our default LR as the pipeline runs it (each party robust-scales its own columns) vs scikit-learn's
    LogisticRegression() on the reference protocol (standard scaling), same public split."""
    from sklearn.linear_model import LogisticRegression

    from mpc_fl.data.vertical import RobustScaler, Standardizer, join_on_ids, stratified_split

    bank, provider = join_on_ids(bank, provider)
    train, test = stratified_split(bank.y)
    parts = [t.X for t in (bank, provider)]
    robust = [RobustScaler.fit(X[train]) for X in parts]
    Xr = np.hstack([s.transform(X) for s, X in zip(robust, parts, strict=True)])
    ours = PlainLR(LRParams()).fit(Xr[train], bank.y[train]).predict_proba(Xr[test])
    X = np.hstack(parts)
    std = Standardizer.fit(X[train])
    ref = LogisticRegression().fit(std.transform(X[train]), bank.y[train])
    return metrics.auc(bank.y[test], ours), metrics.auc(
        bank.y[test], ref.decision_function(std.transform(X[test]))
    )


@pytest.mark.parametrize("dataset", ["breast", "default_credit", "sme", "heavy_tailed"])
def test_default_lr_is_within_0005_auc_of_scikit_learn(dataset):
    """A bank engineer compares with scikit-learn: our default may not fall more than 0.005 behind it."""
    if dataset == "heavy_tailed":
        from mpc_fl.data.heavy_tailed import heavy_tailed_credit

        tables = heavy_tailed_credit()
    elif dataset == "sme":
        from mpc_fl.data.party_table import table_from_frame
        from mpc_fl.data.synthetic_sme import SMEScenario, generate_sme

        frames = generate_sme(SMEScenario(n_bank=20000, overlap=0.6, n_platform_only=5000, seed=42))
        tables = (table_from_frame(frames[0], role="bank"), table_from_frame(frames[1], role="provider"))
    else:
        from mpc_fl.config import data_root
        from mpc_fl.data.vertical import load_fate_pair

        if not (data_root() / dataset / "guest.csv").is_file():
            pytest.skip(f"dataset {dataset!r} not found under {data_root()}")
        tables = load_fate_pair(dataset)
    ours, sklearn = _ours_and_sklearn(*tables)
    assert ours >= sklearn - 0.005, (ours, sklearn)
