"""Hetero-LR on OU and on Paillier (no arbiter) reproduces PlainLR on the joined features, two parties as threads."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.crypto.paillier import SCHEMES, allow_short_keys_for_tests
from mpc_fl.models.lr import LRParams, PlainLR
from mpc_fl.protocols.base import LocalData
from mpc_fl.protocols.paillier_lr import PaillierLR, check_batch_schedule
from mpc_fl.runtime.channel import LocalChannel
from mpc_fl.runtime.local import ThreadContext, run_in_threads

KEY_BITS = 1024  # below the 2048-bit floor: tests that make keys use the short_keys fixture (conftest)


def run_threads(roles: tuple[str, ...], fn) -> dict:  # noqa: ANN001
    return run_in_threads(fn, roles)


def _data(n: int = 300, seed: int = 0):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[:, 4] = np.abs(X[:, 4]) * 3 - 1  # skewed column: shifted multipliers
    z = 1.2 * X[:, 0] - 0.7 * X[:, 3] + 0.5 * X[:, 4] + 0.3
    y = (z + rng.logistic(size=n) > 0).astype(float)
    return X[:240], y[:240], X[240:]


@pytest.mark.usefixtures("short_keys")
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("sig,l2", [("exact", 0.0), ("hard", 0.01)])
def test_matches_plaintext(sig: str, l2: float, scheme: str) -> None:
    X, y, X_te = _data()
    d_b = 2
    params = LRParams(
        learning_rate=0.5, n_epochs=2, batch_size=64, min_iterations=0, sigmoid=sig, l2=l2, seed=3
    )

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, d_b) if ctx.role == "bank" else slice(d_b, None)
        proto = PaillierLR(params, scheme=scheme, key_bits=KEY_BITS)
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
    # ciphertexts really cross the wire: >= one ciphertext (|n^2| Paillier, |n| OU) per residual per iteration
    ct_bytes = (2 if scheme == "paillier" else 1) * KEY_BITS // 8
    tr_b = led_b.by_phase["training"]
    assert tr_b.bytes_sent >= 240 * 2 * ct_bytes
    assert led_p.by_phase["training"].bytes_sent >= n_iter * 3 * ct_bytes
    assert led_b.by_phase["setup"].bytes_sent > KEY_BITS // 8  # the public key
    assert led_b.by_phase["scoring"].bytes_recv > 0


@pytest.mark.usefixtures("short_keys")
def test_every_returned_ciphertext_is_rerandomized(ciphertext_spy) -> None:  # noqa: ANN001
    """The provider's [[g_p + r]] never goes out as the deterministic function of [[d]] and X_p."""
    X, y, _ = _data()
    params = LRParams(learning_rate=0.5, n_epochs=1, batch_size=120, min_iterations=0, seed=1)

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, 2) if ctx.role == "bank" else slice(2, None)
        PaillierLR(params, key_bits=KEY_BITS).fit(
            ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None)
        )

    run_threads(("bank", "provider"), fn)
    ciphertext_spy.assert_all_rerandomized("provider", expected=2)  # one [[g_p + r]] per batch


@pytest.mark.parametrize("scheme,label", [("paillier", "Paillier"), ("ou", "OU")])
def test_short_key_is_refused_outside_tests(scheme: str, label: str) -> None:
    with pytest.raises(ValueError, match=rf"{label} keys below 2048 bits are refused \(got 1024"):
        PaillierLR(LRParams(n_epochs=1), scheme=scheme, key_bits=1024)
    with pytest.raises(ValueError, match="scheme must be one of ou, paillier"):
        PaillierLR(scheme="rsa")


@pytest.mark.usefixtures("short_keys")
def test_the_bank_refuses_to_return_a_decryption_outside_the_masked_range(monkeypatch) -> None:  # noqa: ANN001
    """A provider that sends a crafted ciphertext in place of [[g_p + r]] (the OU overflow attack's first step)
    gets nothing back: the bank's range check stops the run before it returns the decryption. Positive
    control: the check itself is what stops it (patched out, the decryption goes back)."""
    from mpc_fl.crypto import paillier
    from mpc_fl.protocols import paillier_lr

    X, y, _ = _data()
    params = LRParams(learning_rate=0.5, n_epochs=1, batch_size=120, min_iterations=0, seed=1)
    real_add_plain = paillier.HeuBackend.add_plain

    def crafted(self, ct, p):  # noqa: ANN001, ANN202 - the provider adds a huge value instead of its mask
        return real_add_plain(
            self, ct, np.full(self.shape(ct), (1 << self.plaintext_bits) - 99, dtype=object)
        )

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, 2) if ctx.role == "bank" else slice(2, None)
        PaillierLR(params, scheme="ou", key_bits=KEY_BITS).fit(
            ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None)
        )

    monkeypatch.setattr(paillier.HeuBackend, "add_plain", crafted)
    with pytest.raises(ValueError, match="masked gradient decrypted outside the range the protocol allows"):
        run_threads(("bank", "provider"), fn)
    monkeypatch.setattr(paillier_lr, "check_range", lambda *a, **k: None)  # the mutant: no range check
    run_threads(("bank", "provider"), fn)  # the decryption goes back to the provider: the attack's channel


def test_batch_schedule_guard() -> None:
    """A mini-batch of <= d_p rows lets the provider solve X_p^T d for the residuals: refused, with a fix."""
    check_batch_schedule(240, 64, 3)  # batches of 64, 64, 64, 48
    check_batch_schedule(240, 60, 3)  # no tail
    check_batch_schedule(4, 1024, 3)  # one batch of all 4 rows
    with pytest.raises(
        ValueError,
        match=r"with n_rows=242 and batch_size=60, the last batch of each epoch has n_rows % batch_size = 2 rows"
        r".*choose batch_size=59 or 61 instead",
    ):
        check_batch_schedule(242, 60, 3)
    with pytest.raises(ValueError, match=r"every batch has at most 3 rows.*choose batch_size=5 instead"):
        check_batch_schedule(99, 3, 3)  # 4 would leave a tail of 99 % 4 = 3 rows
    with pytest.raises(ValueError, match=r"more training rows than provider features \(n_rows=3"):
        check_batch_schedule(3, 64, 3)


@pytest.mark.usefixtures("short_keys")
def test_protocol_refuses_a_short_last_batch() -> None:
    """Both parties stop in setup (no hang), before any residual is encrypted."""
    X, y, _ = _data()  # 240 rows, provider has 3 features
    params = LRParams(n_epochs=1, batch_size=238)  # tail of 2 rows

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, 2) if ctx.role == "bank" else slice(2, None)
        PaillierLR(params, key_bits=KEY_BITS).fit(
            ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None)
        )

    with pytest.raises(ValueError, match=r"batch_size=238.*2 rows.*choose batch_size="):
        run_threads(("bank", "provider"), fn)


@pytest.mark.usefixtures("short_keys")
def test_rejects_more_than_two_parties() -> None:
    X, y, _ = _data(n=60)
    roles = ("bank", "p1", "p2")
    ctx = ThreadContext("bank", roles, LocalChannel.create(roles)["bank"])
    with pytest.raises(ValueError, match="two-party"):
        PaillierLR(LRParams(n_epochs=1), key_bits=KEY_BITS).fit(ctx, LocalData(X[:, :2], y))
    with pytest.raises(ValueError, match="two-party"):
        PaillierLR(LRParams(n_epochs=1), key_bits=KEY_BITS).predict_proba(ctx, LocalData(X[:, :2]))


def test_params_dict_has_scheme_and_key_bits() -> None:
    with allow_short_keys_for_tests():
        assert PaillierLR(key_bits=1024).params_dict()["key_bits"] == 1024
    assert {k: PaillierLR().params_dict()[k] for k in ("scheme", "key_bits")} == {
        "scheme": "ou",
        "key_bits": 3072,
    }
    assert PaillierLR(scheme="paillier").params_dict()["key_bits"] == 2048
    assert PaillierLR().name == "paillier_lr"
