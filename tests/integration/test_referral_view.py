"""The shortlist as each party sees it: the platform its list, the bank K; nothing else opens.

Each party is played with everything it receives (:mod:`tests.attacks.view`: every ring value
opened or broadcast to it, every bit vector) while a prospect model scores the platform's
prospects and the list is chosen. Its attack: a value opened under a fresh one-time pad is a
uniform ring word, below 2^32 in magnitude with probability 2^-31, so every small opened value
is a revealed plaintext. Allowed: the platform's membership bits (top K) and, under a threshold,
K at the bank. The positive control opens the margins before choosing (as a shortlist that
ranked in the clear would), and the same attack finds every prospect's score.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.app.jobs import Links, ShortlistJob
from mpc_fl.protocols.base import LocalData
from mpc_fl.runtime.local import run_local
from tests.attacks import view as views
from tests.budget import budget_s

SMALL = 2**32
N_TRAIN, N_PROSPECTS, K = 300, 120, 15
PHASE = ("prospects",)


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gen = np.random.default_rng(8)
    X = gen.normal(size=(N_TRAIN + N_PROSPECTS, 3))
    y = (X[:, 0] - X[:, 1] + gen.logistic(size=len(X)) > 0).astype(np.int64)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:]


class _Identity:
    def transform(self, X: np.ndarray) -> np.ndarray:
        return X


def _run(selection: dict, mutant: bool = False) -> dict:
    from mpc_fl.app.party import LoadedModel
    from mpc_fl.app.referral import shortlist_party
    from mpc_fl.app.store import ModelPart
    from mpc_fl.crypto import shortlist
    from mpc_fl.data.party_table import PartyTable
    from mpc_fl.protocols import make_protocol

    X, y, prospects = _data()
    with pytest.MonkeyPatch.context() as mp:
        whole = views.record(mp)
        if mutant:  # opens the labels in training, and the margins before choosing, to both parties
            from mpc_fl.protocols.ss_lr import SecretSharedLR

            fit = SecretSharedLR.fit

            def leaky_fit(self, ctx, data):  # noqa: ANN001, ANN202
                import torch

                from mpc_fl.crypto.secure_crypten import crypten

                labels = torch.zeros(N_TRAIN) if data.y is None else torch.from_numpy(data.y).double()
                with ctx.channel.phase("training"):
                    crypten.cryptensor(labels, src=0, precision=0).get_plain_text()
                return fit(self, ctx, data)

            mp.setattr(SecretSharedLR, "fit", leaky_fit)
            for name in ("top_k", "above_threshold"):
                honest = getattr(shortlist, name)

                def leaky(z, *a, honest=honest, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
                    z.get_plain_text()
                    return honest(z, *a, **kw)

                mp.setattr(shortlist, name, leaky)

        def fn(session):  # noqa: ANN001, ANN202
            bank = session.role == "bank"
            proto = make_protocol("ss_lr", n_epochs=3)
            train = np.zeros((N_TRAIN, 0)) if bank else X
            proto.fit(session, LocalData(train, y if bank else None))
            names = [] if bank else ["a", "b", "c"]
            part = ModelPart(
                role=session.role, protocol="ss_lr", protocol_version=1, params={}, parties=list(session.roles),
                fingerprint="f" * 64, feature_names=names, meta={"features": "providers"},
            )  # fmt: skip
            model = LoadedModel(part, proto, _Identity())
            table = None if bank else PartyTable("provider", np.arange(N_PROSPECTS), prospects, tuple(names))
            job = ShortlistJob(
                role=session.role, model="-", links=Links("-", "-"), **(selection if bank else {})
            )
            report = shortlist_party(session, model, table, job)
            return {"view": whole.export(), "report": report.to_dict()}

        return {r: out["result"] for r, out in run_local(fn, timeout_s=budget_s(90)).items()}


def _small(view: views.View, phases: tuple[str, ...] = PHASE) -> np.ndarray:
    opened = view.ring_words(phases, ("open", "broadcast", "recv", "gather"))
    return np.concatenate(
        [v[np.abs(v.astype(np.float64)) < SMALL] for v in opened] or [np.zeros(0, np.int64)]
    )


@pytest.fixture(scope="module")
def runs() -> dict:
    return {
        "top_k": _run({"top_k": K}),
        "threshold": _run({"threshold": 0.6}),
        "mutant": _run({"top_k": K}, mutant=True),
    }


def test_the_platform_learns_its_list_and_the_bank_only_k(runs):
    for mode, run in (("top_k", runs["top_k"]), ("threshold", runs["threshold"])):
        bank, platform = run["bank"], run["provider"]
        members = platform["report"]["shortlist"]
        assert bank["report"]["shortlist"] is None and bank["report"]["scores"] is None
        assert platform["report"]["scores"] is None  # the scores are never opened to it by default
        assert bank["report"]["k"] == platform["report"]["k"] == len(members) > 0
        if mode == "top_k":
            assert len(members) == K
        # the platform's only plaintexts: one 0/1 bit per prospect
        found = _small(platform["view"])
        assert found.size == N_PROSPECTS and set(found.tolist()) <= {0, 1} and found.sum() == len(members), (
            mode
        )
        # the bank's: nothing under top K (it chose K), the count under a threshold
        expected = [] if mode == "top_k" else [len(members)]
        assert _small(bank["view"]).tolist() == expected, mode


def test_every_pad_either_party_receives_is_fresh(runs):
    for mode in ("top_k", "threshold"):
        for role in ("bank", "provider"):
            findings, _ = runs[mode][role]["view"].freshness(PHASE)
            flagged = [f for f in findings if f.flagged]
            assert not flagged, (mode, role, flagged)


def test_positive_control_margins_opened_before_choosing_are_found(runs):
    for role in ("bank", "provider"):
        found = _small(runs["mutant"][role]["view"])
        assert found.size >= N_PROSPECTS  # every prospect's margin, in the clear
        assert len(set(found.tolist())) > 10, role  # scores, not bits


def test_the_platforms_view_of_the_prospect_models_training_reveals_nothing(runs):
    """Training with the bank's labels and no bank features: the platform's whole view is fresh, and
    its only plaintexts are the public feature counts (0 for the bank, 3 for itself)."""
    for mode in ("top_k", "threshold"):
        v = runs[mode]["provider"]["view"]
        assert set(_small(v, ("setup", "training")).tolist()) <= {0, 3}, mode
        findings, _ = v.freshness(("setup", "training"))
        assert not [f for f in findings if f.flagged], mode
    # positive control: labels opened in training are found
    leaked = set(_small(runs["mutant"]["provider"]["view"], ("setup", "training")).tolist())
    assert leaked - {0, 3} == {1}
