"""Our default LR against scikit-learn's LogisticRegression() on every dataset: no under-fitting.

A bank engineer compares with scikit-learn, not with our plaintext twin. Each case fits our
default LR the way the pipeline does (each party robust-scales its own columns on its training
rows; :class:`mpc_fl.data.vertical.RobustScaler`) and scikit-learn's lbfgs LR on the
reference protocol (standard scaling), on the same public split, and records both AUCs, the
iterations our schedule ran, and scikit-learn on our scaling too. The secure twins of our LR
are checked against it in ``test_protocols.py``.

The same case compares sigmoid candidates (our plaintext twin with each; the secure twins
compute the same functions, see ``test_mask.py`` for their rounds): the exact logistic,
odd least-squares polynomials of the logistic on a clipped range [-B, B] (degree d; the
default is B = 4, d = 5), the piecewise-linear "hard" sigmoid and SecretFlow's first-order
Taylor "taylor1". The default must stay within 0.002 AUC of the exact sigmoid.
"""

from __future__ import annotations

import numpy as np
import pytest
from _bench import require_dataset

from mpc_fl import metrics
from mpc_fl.models import lr
from mpc_fl.models.lr import LRParams, PlainLR, n_iterations

#: (bound, degree) of the polynomial candidates besides the default
POLY_CANDIDATES = [(4, 3), (4, 5), (4, 7), (6, 7), (8, 7), (8, 9)]


def _sigmoid_candidates(monkeypatch, X: np.ndarray, y: np.ndarray, train, test) -> dict[str, float]:  # noqa: ANN001
    """Test AUC of our LR trained with each candidate sigmoid (default schedule otherwise)."""

    def auc(sigmoid: str) -> float:
        model = PlainLR(LRParams(sigmoid=sigmoid)).fit(X[train], y[train])
        return metrics.auc(y[test], model.predict_proba(X[test]))

    out = {name: auc(name) for name in ("exact", "hard", "taylor1")}
    for bound, degree in POLY_CANDIDATES:
        with monkeypatch.context() as m:
            m.setattr(lr, "POLY_BOUND", float(bound))
            m.setattr(lr, "POLY_COEFFICIENTS", lr.poly_sigmoid_coefficients(bound, degree))
            out[f"poly_b{bound}_d{degree}"] = auc("poly")
    return out


def _tables(dataset: str):  # noqa: ANN202
    if dataset == "heavy_tailed":
        from mpc_fl.data.heavy_tailed import heavy_tailed_credit

        return heavy_tailed_credit()
    if dataset == "sme":
        from mpc_fl.data.party_table import table_from_frame
        from mpc_fl.data.synthetic_sme import SMEScenario, generate_sme

        bank, platform = generate_sme(SMEScenario(n_bank=20000, overlap=0.6, n_platform_only=5000, seed=42))
        return table_from_frame(bank, role="bank"), table_from_frame(platform, role="provider")
    from mpc_fl.data.vertical import load_fate_pair

    require_dataset(dataset)
    return load_fate_pair(dataset)


@pytest.mark.parametrize(
    "dataset", [pytest.param("breast", marks=pytest.mark.smoke), "default_credit", "sme", "heavy_tailed"]
)
def test_lr_reference(benchmark, monkeypatch, dataset):
    from sklearn.linear_model import LogisticRegression

    from mpc_fl.data.vertical import RobustScaler, Standardizer, join_on_ids, stratified_split

    bank, provider = join_on_ids(*_tables(dataset))
    train, test = stratified_split(bank.y)
    y = bank.y
    parts = [bank.X, provider.X]
    Xr = np.hstack([RobustScaler.fit(X[train]).transform(X) for X in parts])
    params = LRParams()
    model = benchmark.pedantic(lambda: PlainLR(params).fit(Xr[train], y[train]), rounds=3, iterations=1)
    X = np.hstack(parts)
    std = Standardizer.fit(X[train])
    sk = LogisticRegression().fit(std.transform(X[train]), y[train])
    sk_robust = LogisticRegression().fit(Xr[train], y[train])
    ours = metrics.auc(y[test], model.predict_proba(Xr[test]))
    reference = metrics.auc(y[test], sk.decision_function(std.transform(X[test])))
    candidates = _sigmoid_candidates(monkeypatch, Xr, y, train, test)
    benchmark.extra_info.update(
        {
            "case": f"lr_reference_{dataset}",
            "dataset": dataset,
            "n_train": int(len(train)),
            "max_abs_standardised": float(np.abs(std.transform(X[train])).max()),
            "ours_auc": ours,
            "sklearn_auc": reference,
            "sklearn_on_our_scaling_auc": metrics.auc(y[test], sk_robust.decision_function(Xr[test])),
            "iterations": n_iterations(len(train), params),
            "params": params.to_dict(),
            "sigmoid_candidates_auc": candidates,
            "default_sigmoid": {"method": params.sigmoid, "bound": lr.POLY_BOUND, "degree": lr.POLY_DEGREE},
        }
    )
    assert ours >= reference - 0.005
    assert abs(ours - candidates["exact"]) <= 0.002, (ours, candidates["exact"])
