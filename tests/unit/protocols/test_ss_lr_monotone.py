"""SS-LR's sign constraints: projected on shares, equal to PlainLR's, and private to the party that sets them."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.models.lr import LRParams, PlainLR
from mpc_fl.protocols.base import LocalData
from mpc_fl.protocols.ss_lr import SecretSharedLR
from mpc_fl.runtime.channel import LocalChannel
from mpc_fl.runtime.local import ThreadContext, run_local

NAMES = ("b0", "b1", "b2", "p0", "p1", "p2")
#: b1 truly lowers the score and p0 truly raises it: both constraints below bind
SPECS = {"bank": "b1:+1", "provider": "p0:-1"}
JOINT_SIGNS = np.array([0, 1, 0, -1, 0, 0])
PARAMS = dict(n_epochs=2, batch_size=128, min_iterations=0)


def _data(n: int = 640, seed: int = 0):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    z = 0.8 * X[:, 0] - 1.5 * X[:, 1] + 0.4 * X[:, 2] + 1.5 * X[:, 3] - 0.6 * X[:, 5] - 0.2
    y = (z + rng.logistic(size=n) > 0).astype(float)
    return X[:512], y[:512], X[512:]


def _layout(roles: tuple[str, ...]) -> dict[str, list[int]]:
    """Each party's columns: the bank b0..b2; one provider p0..p2, or two providers (p0, p1) and (p2)."""
    if len(roles) == 2:
        return {"bank": [0, 1, 2], roles[1]: [3, 4, 5]}
    return {"bank": [0, 1, 2], roles[1]: [3, 4], roles[2]: [5]}


def _run(params: LRParams, specs: dict[str, str], roles: tuple[str, ...] = ("bank", "provider")) -> dict:
    X, y, X_te = _data()
    cols = _layout(roles)

    def fn(session):  # noqa: ANN001, ANN202
        c, bank = cols[session.role], session.role == "bank"
        proto = SecretSharedLR(params, reveal_model=True, monotone=specs.get(session.role, ""))
        proto.fit(session, LocalData(X[:, c], y if bank else None, tuple(NAMES[j] for j in c)))
        return {
            "p": proto.predict_proba(session, LocalData(X_te[:, c])),
            "coef": proto.coef_,
            "run_info": proto.run_info(),
            "state": repr(vars(proto)),
        }

    return run_local(fn, roles)


@pytest.mark.parametrize(
    ("sigmoid", "roles"),
    [
        ("poly", ("bank", "provider")),  # the two-party online engine
        ("exact", ("bank", "provider")),  # CrypTen's operations, the carry-only comparison
        ("poly", ("bank", "provider1", "provider2")),  # three parties: CrypTen's own comparison circuit
    ],
)
def test_constrained_weights_keep_their_signs_and_match_plain_lr(
    sigmoid: str, roles: tuple[str, ...]
) -> None:
    X, y, X_te = _data()
    params = LRParams(sigmoid=sigmoid, **PARAMS)
    free = PlainLR(params).fit(X, y)
    assert free.coef_[1] < -0.1 and free.coef_[3] > 0.1  # unconstrained, both have the wrong sign
    plain = PlainLR(params, JOINT_SIGNS).fit(X, y)
    specs = dict(SPECS) if len(roles) == 2 else {"bank": SPECS["bank"], "provider1": SPECS["provider"]}
    out = _run(params, specs, roles)
    coef = np.concatenate([out[r]["result"]["coef"] for r in roles])
    assert coef[1] >= 0 and coef[3] <= 0
    np.testing.assert_allclose(coef, plain.coef_, atol=0.01)
    assert np.max(np.abs(out["bank"]["result"]["p"] - plain.predict_proba(X_te))) < 0.01


def test_a_providers_constraints_never_reach_the_bank() -> None:
    """The bank reports and keeps only its own constraints, and its traffic (bytes, rounds, per phase)
    is the same whatever the provider constrains: its view cannot depend on the provider's signs."""
    params = LRParams(**PARAMS)
    views = {}
    for provider_spec in ("p0:-1", "p0:+1,p2:-1"):
        out = _run(params, {"bank": "b1:+1", "provider": provider_spec})
        bank = out["bank"]
        assert bank["result"]["run_info"] == {"monotone": {"b1": 1}}
        assert "p0" not in bank["result"]["state"] and "p2" not in bank["result"]["state"]
        assert out["provider"]["result"]["run_info"]["monotone"]["p0"] in (-1, 1)
        views[provider_spec] = {
            ph: (t["bytes_sent"], t["bytes_recv"], t["rounds"], t["dealer_bytes"])
            for ph, t in bank["ledger"]["by_phase"].items()
            if ph in ("setup", "training")
        }
    assert views["p0:-1"] == views["p0:+1,p2:-1"]


def test_projection_cost_per_step() -> None:
    """With constraints the online path adds one sign test and two product rounds per step (8 rounds)."""
    params = LRParams(**PARAMS)
    n_steps = 8
    with_, without = _run(params, SPECS), _run(params, {})
    for role in ("bank", "provider"):
        t1 = with_[role]["ledger"]["by_phase"]["training"]
        t0 = without[role]["ledger"]["by_phase"]["training"]
        assert (t1["rounds"] - t0["rounds"]) / n_steps == 8
    assert without["bank"]["result"]["run_info"] == {}


def test_monotone_is_left_out_of_params_dict() -> None:
    a, b = SecretSharedLR(LRParams(), monotone="b1:+1"), SecretSharedLR(LRParams(), monotone="p0:-1")
    assert "monotone" not in a.params_dict()
    assert a.params_dict() == b.params_dict() == SecretSharedLR(LRParams()).params_dict()


def test_a_name_the_party_does_not_have_is_refused_before_any_traffic() -> None:
    X, y, _ = _data()
    roles = ("bank", "provider")
    chan = LocalChannel.create(roles)["bank"]
    proto = SecretSharedLR(LRParams(**PARAMS), monotone="b1:+1,p0:-1")  # p0 is the provider's
    with pytest.raises(ValueError, match="'p0' not among this party's features"):
        proto.fit(ThreadContext("bank", roles, chan), LocalData(X[:, :3], y, NAMES[:3]))
    assert chan.ledger.total().bytes_sent == 0 and chan.ledger.total().rounds == 0


def test_feature_importance_is_each_partys_own_weight_magnitudes():
    """|w_j| opened to its owner alone: equal to the weights the test opens (reveal_model) in magnitude."""
    X, y, _ = _data()
    cols = _layout(("bank", "provider"))

    def fn(session):  # noqa: ANN001, ANN202
        c, bank = cols[session.role], session.role == "bank"
        proto = SecretSharedLR(LRParams(**PARAMS), reveal_model=True)
        proto.fit(session, LocalData(X[:, c], y if bank else None))
        return proto.feature_importance(session)["abs_weight"], proto.coef_

    res = run_local(fn)
    for role in ("bank", "provider"):
        magnitude, coef = res[role]["result"]
        assert magnitude.shape == (3,)
        np.testing.assert_allclose(magnitude, np.abs(coef), atol=1e-3)
