"""HE-LR's sign constraints: each party projects its own weights, as PlainLR does, and tells nobody."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from mpc_fl.models.lr import LRParams, PlainLR
from mpc_fl.protocols.base import LocalData
from mpc_fl.protocols.paillier_lr import PaillierLR
from mpc_fl.runtime.channel import LocalChannel
from mpc_fl.runtime.local import ThreadContext, run_in_threads

KEY_BITS = 1024  # below the 2048-bit floor: the short_keys fixture (conftest) allows it in tests
NAMES = ("b0", "b1", "b2", "p0", "p1", "p2")
#: b1 truly lowers the score and p0 truly raises it: both constraints bind
SPECS = {"bank": "b1:+1", "provider": "p0:-1"}
JOINT_SIGNS = np.array([0, 1, 0, -1, 0, 0])
PARAMS = LRParams(learning_rate=0.5, n_epochs=2, batch_size=64, min_iterations=0, seed=3)


def _data(n: int = 300, seed: int = 0):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    z = 0.8 * X[:, 0] - 1.5 * X[:, 1] + 0.4 * X[:, 2] + 1.5 * X[:, 3] - 0.6 * X[:, 5] - 0.2
    y = (z + rng.logistic(size=n) > 0).astype(float)
    return X[:240], y[:240], X[240:]


def _run(params: LRParams, specs: dict[str, str]) -> dict:
    X, y, X_te = _data()

    def fn(ctx):  # noqa: ANN001, ANN202
        c, bank = (slice(0, 3), True) if ctx.role == "bank" else (slice(3, 6), False)
        proto = PaillierLR(params, key_bits=KEY_BITS, monotone=specs.get(ctx.role, ""))
        proto.fit(ctx, LocalData(X[:, c], y if bank else None, NAMES[c]))
        return proto.predict_proba(ctx, LocalData(X_te[:, c])), proto

    return {r: res for r, (res, _ledger) in run_in_threads(fn, ("bank", "provider")).items()}


@pytest.mark.usefixtures("short_keys")
@pytest.mark.parametrize(("sigmoid", "l2"), [("exact", 0.0), ("hard", 0.01)])
def test_constrained_weights_keep_their_signs_and_match_plain_lr(sigmoid: str, l2: float) -> None:
    X, y, X_te = _data()
    params = LRParams(**{**PARAMS.to_dict(), "sigmoid": sigmoid, "l2": l2})
    free = PlainLR(params).fit(X, y)
    assert free.coef_[1] < -0.1 and free.coef_[3] > 0.1  # unconstrained, both have the wrong sign
    plain = PlainLR(params, JOINT_SIGNS).fit(X, y)
    out = _run(params, SPECS)
    (p_bank, bank), (_, provider) = out["bank"], out["provider"]
    assert bank.coef_[1] >= 0 and provider.coef_[0] <= 0
    np.testing.assert_allclose(np.concatenate([bank.coef_, provider.coef_]), plain.coef_, atol=1e-4)
    np.testing.assert_allclose(p_bank, plain.predict_proba(X_te), atol=1e-4)


@pytest.mark.usefixtures("short_keys")
def test_a_providers_constraints_never_reach_the_bank(ciphertext_spy) -> None:  # noqa: ANN001
    """The bank reports and keeps only its own constraints; the provider sends only its set-up sizes,
    partial logits and ciphertexts, as without constraints."""
    out = _run(PARAMS, {"bank": "b1:+1", "provider": "p0:-1,p2:+1"})
    bank, provider = out["bank"][1], out["provider"][1]
    assert bank.run_info() == {"monotone": {"b1": 1}}
    assert provider.run_info() == {"monotone": {"p0": -1, "p2": 1}}
    assert not any(name in repr(vars(bank)) for name in ("p0", "p2"))
    plain = [
        b for b in ciphertext_spy.sent["provider"] if b not in ciphertext_spy.ciphertexts_sent_by("provider")
    ]
    assert json.loads(plain[0]).keys() == {"n_features", "n_rows", "mask_bits"}
    assert all(np.load(io.BytesIO(b)).files == ["u"] for b in plain[1:])  # the partial logits only
    assert len(plain) == 1 + 8 + 1  # set-up, 8 batches, scoring


def test_monotone_is_left_out_of_params_dict() -> None:
    a, b = PaillierLR(monotone="b1:+1"), PaillierLR(monotone="p0:-1")
    assert "monotone" not in a.params_dict()
    assert a.params_dict() == b.params_dict() == PaillierLR().params_dict()


@pytest.mark.usefixtures("short_keys")
def test_a_name_the_party_does_not_have_is_refused_before_any_traffic() -> None:
    X, y, _ = _data()
    roles = ("bank", "provider")
    chan = LocalChannel.create(roles)["bank"]
    proto = PaillierLR(PARAMS, key_bits=KEY_BITS, monotone="b1:+1,p0:-1")  # p0 is the provider's
    with pytest.raises(ValueError, match="'p0' not among this party's features"):
        proto.fit(ThreadContext("bank", roles, chan), LocalData(X[:, :3], y, NAMES[:3]))
    assert chan.ledger.total().bytes_sent == 0 and chan.ledger.total().rounds == 0


@pytest.mark.usefixtures("short_keys")
def test_feature_importance_is_each_partys_own_weight_magnitudes() -> None:
    out = _run(LRParams(**PARAMS.to_dict()), {})
    for _, proto in out.values():
        np.testing.assert_array_equal(proto.feature_importance(None)["abs_weight"], np.abs(proto.coef_))
