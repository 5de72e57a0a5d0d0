"""The online engine: Beaver products and the carry-only sign test agree with plaintext, in the rounds stated."""

from __future__ import annotations

import numpy as np
import torch

from mpc_fl.runtime.local import run_local

EDGE = [0, 1, -1, 2, -2, 2**62, -(2**62), 2**63 - 1, -(2**63), 2**63 - 2, -(2**63) + 1, 12345, -12345]


def _values() -> torch.Tensor:
    gen = np.random.default_rng(4)
    rand = gen.integers(-(2**63), 2**63 - 1, size=200, dtype=np.int64)
    small = gen.integers(-(2**20), 2**20, size=200, dtype=np.int64)
    return torch.from_numpy(np.r_[np.array(EDGE, dtype=np.int64), rand, small])


def _split(x: torch.Tensor, rank: int) -> torch.Tensor:
    """Additive shares of public test values: party 1 holds a fixed random pad, party 0 the rest."""
    pad = torch.from_numpy(
        np.random.default_rng(99).integers(-(2**63), 2**63 - 1, size=x.numel(), dtype=np.int64)
    )
    return x - pad if rank == 0 else pad


def _engine(session, plan):  # noqa: ANN001, ANN202
    from mpc_fl.crypto.online import TwoParty
    from mpc_fl.crypto.preprocessing import fetch
    from mpc_fl.crypto.secure_crypten import crypten

    comm = crypten.communicator.get()
    return TwoParty(fetch(plan, {}), comm.get_rank(), comm)


def _msb(session) -> dict:  # noqa: ANN001
    from mpc_fl.crypto.online import plan_msb
    from mpc_fl.crypto.preprocessing import Plan

    x = _values()
    plan = Plan()
    plan_msb(plan, x.numel())
    and_bits = sum(int(it[1]) for it in plan.items if it[0] == "and") / x.numel()
    cross_bits = sum(int(it[1]) for it in plan.items if it[0] == "cross_and") / x.numel()
    eng = _engine(session, plan)
    led = session.channel.ledger
    with session.channel.phase("training"):
        bit = eng.msb(_split(x, eng.rank))
    rounds = led.by_phase["training"].rounds
    (opened,) = eng.open(bit)
    return {
        "msb": opened.tolist(),
        "rounds": rounds,
        "and_bits": and_bits,
        "cross_bits": cross_bits,
        "left": eng.pre.remaining,
    }


def test_the_sign_test_is_exact_on_edge_values_in_six_rounds():
    res = run_local(_msb, timeout_s=120)
    want = (_values() < 0).long().tolist()
    for r in res.values():
        out = r["result"]
        assert out["msb"] == want
        assert out["rounds"] == 6 and out["left"] == 0
        # 60 ANDs, 160 cross ANDs (half the openings each) and the root AND: CrypTen needs 832 ANDs
        assert out["and_bits"] == 60 and out["cross_bits"] == 160


def _mul(session) -> dict:  # noqa: ANN001
    from mpc_fl.crypto.online import plan_mul
    from mpc_fl.crypto.preprocessing import Plan

    gen = np.random.default_rng(1)
    x, y = gen.normal(size=300) * 50, gen.normal(size=300) * 3
    fx, fy = (torch.from_numpy(np.round(v * 2**16).astype(np.int64)) for v in (x, y))
    plan = Plan()
    plan_mul(plan, 300)
    plan_mul(plan, 300)
    eng = _engine(session, plan)
    with session.channel.phase("training"):
        xy, xx = eng.mul(
            [(_split(fx, eng.rank), _split(fy, eng.rank)), (_split(fx, eng.rank), _split(fx, eng.rank))]
        )
    rounds = session.channel.ledger.by_phase["training"].rounds
    a, b = eng.open(xy, xx)
    return {
        "xy": (a.double() / 2**16).tolist(),
        "xx": (b.double() / 2**16).tolist(),
        "rounds": rounds,
        "x": x.tolist(),
        "y": y.tolist(),
    }


def test_beaver_products_in_one_opening():
    res = run_local(_mul, timeout_s=120)
    out = res["bank"]["result"]
    x, y = np.array(out["x"]), np.array(out["y"])
    assert np.abs(np.array(out["xy"]) - x * y).max() < 1e-3
    assert np.abs(np.array(out["xx"]) - x * x).max() < 1e-2
    assert out["rounds"] == 1
