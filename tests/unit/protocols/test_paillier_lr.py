"""Paillier hetero-LR (no arbiter) reproduces PlainLR on the joined features, two parties as threads."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.models.lr import LRParams, PlainLR
from mpc_fl.protocols.base import LocalData
from mpc_fl.protocols.paillier_lr import PaillierLR
from mpc_fl.runtime.channel import LocalChannel
from mpc_fl.runtime.local import ThreadContext, run_in_threads

KEY_BITS = 1024


def run_threads(roles: tuple[str, ...], fn) -> dict:  # noqa: ANN001
    return run_in_threads(fn, roles)


def _data(n: int = 300, seed: int = 0):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[:, 4] = np.abs(X[:, 4]) * 3 - 1  # skewed column: shifted multipliers
    z = 1.2 * X[:, 0] - 0.7 * X[:, 3] + 0.5 * X[:, 4] + 0.3
    y = (z + rng.logistic(size=n) > 0).astype(float)
    return X[:240], y[:240], X[240:]


@pytest.mark.parametrize("sig,l2", [("exact", 0.0), ("hard", 0.01)])
def test_matches_plaintext(sig: str, l2: float) -> None:
    X, y, X_te = _data()
    d_b = 2
    params = LRParams(learning_rate=0.5, n_epochs=2, batch_size=64, sigmoid=sig, l2=l2, seed=3)

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, d_b) if ctx.role == "bank" else slice(d_b, None)
        proto = PaillierLR(params, key_bits=KEY_BITS)
        proto.fit(ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None))
        return proto.predict_proba(ctx, LocalData(X_te[:, cols])), proto

    res = run_threads(("bank", "provider"), fn)
    (p_bank, proto_b), led_b = res["bank"]
    (p_prov, proto_p), led_p = res["provider"]
    plain = PlainLR(params).fit(X, y)
    assert p_prov is None
    np.testing.assert_allclose(p_bank, plain.predict_proba(X_te), atol=1e-4)
    np.testing.assert_allclose(proto_b.coef_, plain.coef_[:d_b], atol=1e-4)
    np.testing.assert_allclose(proto_p.coef_, plain.coef_[d_b:], atol=1e-4)
    assert proto_p.intercept_ is None
    n_iter = 2 * -(-240 // 64)
    assert len(proto_b.history_) == n_iter
    # ciphertexts really cross the wire: >= one 2*key_bits-bit ciphertext per residual per iteration
    tr_b = led_b.by_phase["training"]
    assert tr_b.bytes_sent >= 240 * 2 * (2 * KEY_BITS // 8)
    assert led_p.by_phase["training"].bytes_sent >= n_iter * 3 * (2 * KEY_BITS // 8)
    assert led_b.by_phase["setup"].bytes_sent > KEY_BITS // 8  # the public key
    assert led_b.by_phase["scoring"].bytes_recv > 0


def test_rejects_more_than_two_parties() -> None:
    X, y, _ = _data(n=60)
    roles = ("bank", "p1", "p2")
    ctx = ThreadContext("bank", roles, LocalChannel.create(roles)["bank"])
    with pytest.raises(ValueError, match="two-party"):
        PaillierLR(LRParams(n_epochs=1), key_bits=KEY_BITS).fit(ctx, LocalData(X[:, :2], y))
    with pytest.raises(ValueError, match="two-party"):
        PaillierLR(LRParams(n_epochs=1), key_bits=KEY_BITS).predict_proba(ctx, LocalData(X[:, :2]))


def test_params_dict_has_key_bits() -> None:
    assert PaillierLR(key_bits=1024).params_dict()["key_bits"] == 1024
    assert PaillierLR().name == "paillier_lr"
