"""The reason ranking of :mod:`mpc_fl.crypto.reasons` in real party processes with the dealer.

Exact against the plaintext definition (:func:`mpc_fl.models.reasons.top_reasons`: order, ties to
the unit listed first, the contributions themselves), with two and three computing parties; and
what is opened: the bank's plaintexts are its R reasons per row and nothing more, the other
parties' none (nor which rows the bank picked with :func:`select_rows`). A positive control opens
every contribution to every party and is caught at both.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.models.reasons import top_reasons as plain_top
from mpc_fl.runtime.local import run_local
from tests.attacks import view as views
from tests.budget import budget_s

TWO = ("bank", "provider")
THREE = ("bank", "provider", "provider2")
GEN = np.random.default_rng(3)
C = np.round(GEN.normal(size=(40, 9)) * 2, 3)
C[0] = [1.0, 3.0, 3.0, -1.0, 3.0, 0.5, 0.0, 0.0, 2.0]  # a three-way tie at the top: units 1, 2, 4 in order
C[1] = 0.0  # every unit tied
C[2, 5] = 300.0  # a large contribution
R = 4
SMALL = 2**32
#: the rows the bank picks secretly before ranking (the service: the applicants among their decoys)
PICKED = np.array([7, 0, 31])


def _party(session, leak: bool = False) -> dict:  # noqa: ANN001
    import torch

    from mpc_fl.crypto import reasons
    from mpc_fl.crypto.secure_crypten import crypten

    c = crypten.cryptensor(torch.tensor(C), src=0)  # the bank's input: the test is the ranking
    bank = session.rank == 0
    with session.channel.phase("reasons"):
        if leak:  # positive control: every contribution opened to every party
            c.get_plain_text()
        got = reasons.top_reasons(c, R, dst=0)
        wide = reasons.top_reasons(c[:3], 20, dst=0)  # R above the units: every unit, in order
        rounds = session.channel.ledger.by_phase["reasons"].rounds
        picked = reasons.select_rows(c, PICKED if bank else None, len(PICKED))
        chosen = reasons.top_reasons(picked, R, dst=0)
    out = {"units": None, "values": None, "wide": None, "picked": None}
    if got is not None:
        out = {
            "units": got[0].tolist(), "values": got[1].tolist(), "wide": wide[0].tolist(),
            "picked": chosen[0].tolist(),
        }  # fmt: skip
    out["rounds"] = rounds
    return out


@pytest.fixture(scope="module")
def opened() -> dict:
    res = run_local(_party, TWO, timeout_s=budget_s(60, processes=3))
    return {role: r["result"] for role, r in res.items()}


def test_the_bank_gets_the_plaintext_reasons_exactly(opened):
    units, values = plain_top(C, R)
    assert opened["bank"]["units"] == units.tolist()
    assert np.allclose(opened["bank"]["values"], values, atol=2**-15)
    assert opened["bank"]["units"][0] == [1, 2, 4, 8] and opened["bank"]["units"][1] == [0, 1, 2, 3]
    assert opened["bank"]["units"][2][0] == 5 and opened["bank"]["values"][2][0] == pytest.approx(300.0)
    assert opened["bank"]["wide"] == plain_top(C[:3], 20)[0].tolist()
    assert opened["bank"]["picked"] == plain_top(C[PICKED], R)[0].tolist()  # the rows the bank picked
    assert opened["provider"]["units"] is None  # nothing at the provider


def test_rounds_do_not_grow_with_the_rows(opened):
    # per ranking: two six-round sign tests, one product round, one opening, their dealer requests
    # (measured 46 at the bank for the two rankings, 40 rows and 3 rows)
    assert opened["bank"]["rounds"] <= 2 * 24, opened["bank"]["rounds"]


def test_three_parties_rank_alike():
    res = run_local(_party, THREE, timeout_s=budget_s(120, processes=4))
    assert res["bank"]["result"]["units"] == plain_top(C, R)[0].tolist()


def _run_viewed(leak: bool) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        whole = views.record(mp)

        def fn(session):  # noqa: ANN001, ANN202
            return {"out": _party(session, leak), "view": whole.export()}

        res = run_local(fn, TWO, timeout_s=budget_s(60, processes=3))
    return {role: r["result"] for role, r in res.items()}


def _plaintexts(view: views.View) -> np.ndarray:
    opened = view.ring_words(("reasons",), ("open", "broadcast", "recv", "gather"))
    return np.concatenate(
        [v[np.abs(v.astype(np.float64)) < SMALL] for v in opened] or [np.zeros(0, np.int64)]
    )


def test_only_the_reasons_are_opened_and_every_pad_is_fresh():
    honest, leaky = _run_viewed(False), _run_viewed(True)
    for role in TWO:
        findings, _ = honest[role]["view"].freshness(("reasons",))
        assert not [f for f in findings if f.flagged], role
    assert _plaintexts(honest["provider"]["view"]).size == 0  # nor which rows the bank picked
    assert _plaintexts(leaky["provider"]["view"]).size >= C.size // 2  # positive control: caught
    # the bank's plaintexts: per row and unit (top, top * rank, top * value); nonzero only for the R reasons
    small = _plaintexts(honest["bank"]["view"])
    n_rows = len(C) + 3 + len(PICKED)
    assert np.count_nonzero(small) <= 3 * R * n_rows
    assert np.count_nonzero(_plaintexts(leaky["bank"]["view"])) > np.count_nonzero(small) + len(C) * (
        C.shape[1] - R
    )
