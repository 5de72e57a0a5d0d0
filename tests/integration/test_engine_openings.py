"""What a party receives from SS-LR's online engine is one-time-padded: the provider, playing attacker
with every value the engine opens or sends to it, learns nothing about the bank's labels.

The engine (:mod:`mpc_fl.crypto.online`) claims that every opening is a difference with a fresh
dealer pad (``x - a``, ``u xor a``). The provider records each opening of a default two-party
SS-LR run and scores each training row by the values opened for it in the gradient step (where
the residual ``sigmoid(z) - y`` is opened, masked); the same estimator on the unmasked
residuals (the positive control) finds the labels almost perfectly. The opened bits of the sign
tests must be balanced.
"""

from __future__ import annotations

import numpy as np

from mpc_fl import metrics
from mpc_fl.models.lr import LRParams, PlainLR, schedule, sigmoid
from mpc_fl.protocols.base import LocalData
from mpc_fl.runtime.local import run_local

PARAMS = LRParams(n_epochs=4, batch_size=50, min_iterations=0)  # the default sigmoid: the engine path


def _data(n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gen = np.random.default_rng(5)
    Xb, Xp = gen.normal(size=(n, 3)), gen.normal(size=(n, 4))
    y = ((2 * Xb[:, 0] + Xp[:, 1] + 0.3 * gen.normal(size=n)) > 0).astype(np.int64)
    return Xb, Xp, y


#: what the engine opened, in this process (each forked party fills its own copy)
_SEEN: dict[str, list] = {"ring": [], "bits": []}


def _provider_view(monkeypatch) -> dict:  # noqa: ANN001
    """Run SS-LR; the provider keeps everything the engine opens to it (the forked parties inherit the patch)."""
    from mpc_fl.crypto.online import TwoParty
    from mpc_fl.protocols.ss_lr import SecretSharedLR

    open_ring, open_bits, exchange_bits = TwoParty.open, TwoParty.open_bits, TwoParty.exchange_bits

    def record_ring(self, *xs):  # noqa: ANN001, ANN202
        out = open_ring(self, *xs)
        _SEEN["ring"].append([o.numpy().copy() for o in out])
        return out

    def record_bits(self, *bs):  # noqa: ANN001, ANN202
        out = open_bits(self, *bs)
        _SEEN["bits"].extend(o.copy() for o in out)
        return out

    def record_exchange(self, bits):  # noqa: ANN001, ANN202 - the bank's masked bits of the cross ANDs
        out = exchange_bits(self, bits)
        _SEEN["bits"].append(out.copy())
        return out

    monkeypatch.setattr(TwoParty, "exchange_bits", record_exchange)
    monkeypatch.setattr(TwoParty, "open", record_ring)
    monkeypatch.setattr(TwoParty, "open_bits", record_bits)
    Xb, Xp, y = _data()

    def fn(session):  # noqa: ANN001, ANN202
        X = Xb if session.role == "bank" else Xp
        SecretSharedLR(PARAMS).fit(session, LocalData(X, y if session.role == "bank" else None))
        return (
            {"ring": _SEEN["ring"], "bits": np.concatenate(_SEEN["bits"])}
            if session.role == "provider"
            else None
        )

    return run_local(fn)["provider"]["result"]


def _per_row_scores(openings: list, n: int, batch_values) -> np.ndarray:  # noqa: ANN001
    """Mean, per training row, of the value the gradient step opened for it, in schedule order."""
    total, count = np.zeros(n), np.zeros(n)
    for rows, values in zip(schedule(n, PARAMS), batch_values(openings), strict=True):
        total[rows] += values
        count[rows] += 1
    return total / np.maximum(count, 1)


def test_the_provider_learns_nothing_about_labels_from_the_engines_openings(monkeypatch):
    Xb, Xp, y = _data()
    n = len(y)
    view = _provider_view(monkeypatch)
    widths = {Xb.shape[1], Xp.shape[1]}

    def gradient_openings(ring: list):  # noqa: ANN202
        # an iteration starts with the forward opening (one vector per feature block); the opening
        # just before the next one is the gradient step: residual - pad, one value per batch row
        starts = [i for i, call in enumerate(ring) if {len(v) for v in call} == widths]
        ends = [*starts[1:], len(ring)]
        return [ring[e - 1][0].astype(np.float64) / 2**16 for e in ends]

    masked = _per_row_scores(view["ring"], n, gradient_openings)
    assert abs(metrics.auc(y, masked) - 0.5) < 0.1

    # positive control: the same estimator on the unmasked residuals recovers the labels
    X = np.hstack([Xb, Xp])
    plain = PlainLR(PARAMS).fit(X, y)
    residuals = [
        sigmoid(X[rows] @ plain.coef_ + plain.intercept_, PARAMS.sigmoid) - y[rows]
        for rows in schedule(n, PARAMS)
    ]
    unmasked = _per_row_scores(residuals, n, lambda r: r)
    assert metrics.auc(y, -unmasked) > 0.95

    bits = view["bits"]
    assert bits.size > 100_000 and abs(bits.mean() - 0.5) < 0.01  # the sign tests' openings are balanced
