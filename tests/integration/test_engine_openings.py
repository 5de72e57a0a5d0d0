"""What a party receives from SS-LR's online engine is one-time-padded: the provider, playing attacker
with every value the engine opens or sends to it, learns nothing about the bank's labels.

The engine (:mod:`mpc_fl.crypto.online`) claims that every opening is a difference with a fresh
dealer pad (``x - a``, ``u xor a``). The provider records each opening of a default two-party
SS-LR run and scores each training row by the values opened for it in the gradient step (where
the residual ``sigmoid(z) - y`` is opened, masked); the same estimator on the unmasked
residuals (the positive control) finds the labels almost perfectly. The opened bits of the sign
tests must be balanced.

Marginal checks like these pass a pad reused in every iteration (two openings then subtract to a
difference of residuals), so each party's whole view (every ring word and bit vector it receives,
:mod:`tests.attacks.view`) must also be fresh (:mod:`tests.attacks.freshness`), and a mutant
that reuses the gradient pad is the positive control.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl import metrics
from mpc_fl.models.lr import LRParams, PlainLR, schedule, sigmoid
from mpc_fl.protocols.base import LocalData
from mpc_fl.runtime.local import run_local
from tests.attacks import mutants
from tests.attacks import view as views
from tests.budget import budget_s

PARAMS = LRParams(n_epochs=4, batch_size=50, min_iterations=0)  # the default sigmoid: the engine path
PHASES = ("setup", "training")


def _data(n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gen = np.random.default_rng(5)
    Xb, Xp = gen.normal(size=(n, 3)), gen.normal(size=(n, 4))
    y = ((2 * Xb[:, 0] + Xp[:, 1] + 0.3 * gen.normal(size=n)) > 0).astype(np.int64)
    return Xb, Xp, y


#: what the engine opened, in this process (each forked party fills its own copy)
_SEEN: dict[str, list] = {"ring": []}


def _views(monkeypatch, mutant: bool = False) -> dict:  # noqa: ANN001
    """Run SS-LR; each party keeps its whole view, and the provider also everything the engine opens
    to it (the forked parties inherit the patches)."""
    from mpc_fl.crypto.online import TwoParty
    from mpc_fl.protocols.ss_lr import SecretSharedLR

    whole = views.record(monkeypatch)
    if mutant:  # every iteration's gradient openings residual - b_q take the first iteration's b_q
        mutants.reuse_plan_draw(monkeypatch, "tmatvec", 0)
    open_ring = TwoParty.open

    def record_ring(self, *xs):  # noqa: ANN001, ANN202
        out = open_ring(self, *xs)
        _SEEN["ring"].append([o.numpy().copy() for o in out])
        return out

    monkeypatch.setattr(TwoParty, "open", record_ring)
    Xb, Xp, y = _data()

    def fn(session):  # noqa: ANN001, ANN202
        X = Xb if session.role == "bank" else Xp
        model = SecretSharedLR(PARAMS, reveal_model=mutant)  # the mutant's weights are checked
        model.fit(session, LocalData(X, y if session.role == "bank" else None))
        bits = np.concatenate(whole.bit_vectors(("training",)))
        coef = getattr(model, "coef_", None)
        return {"ring": _SEEN["ring"], "bits": bits, "view": whole.export(), "coef": coef}

    return {role: r["result"] for role, r in run_local(fn, timeout_s=budget_s(10)).items()}


@pytest.fixture(scope="module")
def honest() -> dict:
    with pytest.MonkeyPatch.context() as mp:
        return _views(mp)


def _per_row_scores(openings: list, n: int, batch_values) -> np.ndarray:  # noqa: ANN001
    """Mean, per training row, of the value the gradient step opened for it, in schedule order."""
    total, count = np.zeros(n), np.zeros(n)
    for rows, values in zip(schedule(n, PARAMS), batch_values(openings), strict=True):
        total[rows] += values
        count[rows] += 1
    return total / np.maximum(count, 1)


def _gradient_openings(ring: list, widths: set[int]) -> list[np.ndarray]:
    """Per iteration, the gradient step's opening ``residual - pad`` (one value per batch row).

    An iteration starts with the forward opening (one vector per feature block); the opening just
    before the next one is the gradient step.
    """
    starts = [i for i, call in enumerate(ring) if {len(v) for v in call} == widths]
    ends = [*starts[1:], len(ring)]
    return [ring[e - 1][0] for e in ends]


def test_the_provider_learns_nothing_about_labels_from_the_engines_openings(honest):
    Xb, Xp, y = _data()
    n = len(y)
    view = honest["provider"]
    widths = {Xb.shape[1], Xp.shape[1]}

    masked = _per_row_scores(
        view["ring"], n, lambda ring: [g.astype(np.float64) / 2**16 for g in _gradient_openings(ring, widths)]
    )
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


def test_every_pad_in_a_partys_whole_view_is_fresh(honest):
    """No two received ring words closer than chance (over all of them, and at the same position of
    any two equally long vectors: across iterations), no two bit vectors agreeing beyond chance."""
    for role, r in honest.items():
        found, revealed = r["view"].freshness(PHASES)
        assert not [f for f in found if f.flagged], (role, [str(f) for f in found])
        assert {f.name: f.pairs > 0 for f in found} == dict.fromkeys(
            ("nearest words", "same position", "xor agreement"), True
        )
        # the only plaintexts either party receives: the public feature counts, and that no party
        # has monotone constraints (the one bit the protocol's shape needs)
        assert [v.tolist() for v in revealed] == [[3, 4], [0]], role


def test_positive_control_a_gradient_pad_reused_in_every_iteration_is_flagged(monkeypatch):
    """The mutant trains the same model, and its leak is real: two of its gradient openings
    subtract to the residual differences, which give every label difference of the first two
    batches. Every party's freshness test flags it, at the same position across iterations."""
    Xb, Xp, y = _data()
    mutant = _views(monkeypatch, mutant=True)
    coef = np.r_[mutant["bank"]["coef"], mutant["provider"]["coef"]]
    np.testing.assert_allclose(coef, PlainLR(PARAMS).fit(np.hstack([Xb, Xp]), y).coef_, atol=1e-2)
    grads = _gradient_openings(mutant["provider"]["ring"], {Xb.shape[1], Xp.shape[1]})
    rows = list(schedule(len(y), PARAMS))
    differ = np.abs((grads[1] - grads[0]).astype(np.float64) / 2**16) > 0.5  # |r_a - r_b| ~ 1 iff y_a != y_b
    assert np.array_equal(differ, y[rows[1]] != y[rows[0]])
    for role, r in mutant.items():
        found, _ = r["view"].freshness(PHASES)
        flagged = {f.name for f in found if f.flagged}
        assert "same position" in flagged, (role, [str(f) for f in found])
