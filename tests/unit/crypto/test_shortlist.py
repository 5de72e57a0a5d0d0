"""The shortlist of :mod:`mpc_fl.crypto.shortlist` in real party processes with the dealer.

Exactness against numpy (the k largest, ties broken at random, saturation), and what the
parties see: only the membership bits are opened, to one party; a positive control opens the
keys and is caught.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.runtime.local import run_local
from tests.budget import budget_s

TWO = ("bank", "provider")
GEN = np.random.default_rng(5)
SCORES = np.round(GEN.normal(size=200) * 3, 3)
SCORES[[3, 70, 150]] = 9.5  # a three-way tie at the top
SCORES[[10, 11]] = [5000.0, -5000.0]  # beyond the saturation bound (2^10): still ranked first / last
TIES = np.array([1.0, 2.0, 2.0, 2.0, 0.5, 2.0])  # k = 3 of four equal maxima


def _party(session, leak: bool = False) -> dict:  # noqa: ANN001
    import torch

    from mpc_fl.crypto import shortlist
    from mpc_fl.crypto.secure_crypten import crypten

    provider = session.roles.index("provider")
    out: dict = {}
    z = crypten.cryptensor(torch.tensor(SCORES))
    for k in (1, 3, 17, 200):
        bits = shortlist.top_k(z, k, rank=session.rank, tie_breaker=provider)
        out[f"top{k}"] = bits.get_plain_text(dst=provider)
    led = session.channel.ledger
    with session.channel.phase("top_k"):
        tied = shortlist.top_k(
            crypten.cryptensor(torch.tensor(TIES)), 3, rank=session.rank, tie_breaker=provider
        )
    out["ties"] = tied.get_plain_text(dst=provider)
    out["rounds"] = led.by_phase["top_k"].rounds
    t = crypten.cryptensor(torch.tensor([1.25]), src=0)  # the bank's secret threshold
    out["above"] = shortlist.above_threshold(z, t).get_plain_text(dst=provider)
    sat = shortlist.saturate(crypten.cryptensor(torch.tensor([-9.0, -2.0, 0.0, 3.0, 100.0]), precision=0), 5)
    out["saturate"] = sat.get_plain_text().tolist()
    if leak:  # positive control: a shortlist that opens its keys to the provider
        keys, _ = shortlist.ranking_keys(z, rank=session.rank, tie_breaker=provider)
        out["leaked"] = keys.get_plain_text(dst=provider)
    for key, v in list(out.items()):
        if isinstance(v, torch.Tensor):
            out[key] = v.round().long().tolist()
        elif v is None:
            out[key] = None
    return out


@pytest.fixture(scope="module")
def opened() -> dict:
    res = run_local(_party, TWO, timeout_s=budget_s(60, processes=3))
    return {role: r["result"] for role, r in res.items()}


def test_top_k_opens_exactly_the_k_largest_to_the_provider_only(opened):
    order = np.argsort(-SCORES, kind="stable")
    for k in (1, 3, 17, 200):
        got = np.array(opened["provider"][f"top{k}"])
        assert set(got) <= {0, 1} and got.sum() == k, k
        assert opened["bank"][f"top{k}"] is None  # nothing is opened to the bank
        kth = SCORES[order[k - 1]]
        assert np.all(SCORES[got == 1] >= kth) and np.all(SCORES[got == 0] <= kth), k
    assert opened["provider"]["top1"][10] == 1  # 5000 saturates at 1024 and still ranks first
    top3 = np.array(opened["provider"]["top3"])
    assert top3[10] == 1 and top3[[3, 70, 150]].sum() == 2  # then two of the three tied at 9.5, at random


def test_ties_are_broken_so_the_list_has_exactly_k_rows(opened):
    got = np.array(opened["provider"]["ties"])
    assert got.sum() == 3 and got[[0, 4]].sum() == 0  # three of the four tied maxima


def test_top_k_rounds_grow_with_the_key_bits_not_the_rows(opened):
    from mpc_fl.crypto.shortlist import key_bits

    steps = key_bits(len(TIES), 16)
    # two six-round sign tests per step (measured: 403 rounds for 30 steps, with the dealer
    # requests, the saturation and the last test)
    assert opened["bank"]["rounds"] <= 14 * steps, opened["bank"]["rounds"]


def test_above_threshold_is_the_comparison_with_the_banks_secret(opened):
    assert opened["provider"]["above"] == (SCORES >= 1.25).astype(int).tolist()
    assert opened["bank"]["above"] is None
    assert opened["bank"]["saturate"] == [-5, -2, 0, 3, 5]


def _leaky_party(session) -> dict:  # noqa: ANN001
    return _party(session, leak=True)


def test_positive_control_a_leaking_shortlist_is_caught():
    res = run_local(_leaky_party, TWO, timeout_s=budget_s(60, processes=3))
    leaked = res["provider"]["result"]["leaked"]
    # the keys order the scores: a provider holding them ranks every prospect, more than the list
    assert (
        leaked is not None
        and np.corrcoef(np.argsort(np.argsort(leaked)), np.argsort(np.argsort(SCORES)))[0, 1] > 0.99
    )
