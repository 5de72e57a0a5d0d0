"""Beaver products with repeated and broadcast operands: exact, one opening, each operand sent once."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.runtime.local import run_local


def _run(session) -> dict:  # noqa: ANN001
    import torch

    from mpc_fl.crypto.products import beaver_products
    from mpc_fl.crypto.secure_crypten import crypten

    gen = np.random.default_rng(5)
    row_bits = torch.from_numpy((gen.random((40, 1)) < 0.5).astype(np.float32))
    T = torch.from_numpy(gen.integers(-1000, 1000, size=(40, 300)).astype(np.float32))
    y = torch.from_numpy(gen.integers(-50, 50, size=(300,)).astype(np.float32))
    eb = crypten.cryptensor(row_bits, precision=0)
    eT = crypten.cryptensor(T, precision=0)
    ey = crypten.cryptensor(y, precision=0, src=len(session.roles) - 1)
    led = session.channel.ledger
    with session.channel.phase("training"):
        bt, ty, tt = beaver_products([(eb, eT), (eT, ey), (eT, eT)])
    cost = led.by_phase["training"]
    from crypten.mpc import MPCTensor

    def opened(share: torch.Tensor) -> list:
        return MPCTensor.from_shares(share, precision=0)._tensor.reveal().tolist()

    return {
        "bt": opened(bt),
        "ty": opened(ty),
        "tt": opened(tt),
        "sent": cost.bytes_sent - cost.dealer_bytes,
        "rounds": cost.rounds,
        "want": [(row_bits * T).tolist(), (T * y).tolist(), (T * T).tolist()],
    }


@pytest.mark.parametrize("roles", [("bank", "provider"), ("bank", "provider", "provider2")])
def test_repeated_and_broadcast_operands_give_exact_products(roles):
    res = run_local(_run, roles)
    for role, r in res.items():
        out = r["result"]
        assert [out["bt"], out["ty"], out["tt"]] == out["want"], role


def test_each_distinct_operand_is_opened_once_at_its_own_size():
    res = run_local(_run)
    prov = res["provider"]["result"]
    operands = 40 * 1 + 40 * 300 + 300  # the bits, T and y; T appears in all three pairs
    naive = 2 * (40 * 300) * 3  # CrypTen's products: both operands at full size, per pair
    assert 8 * operands <= prov["sent"] < 8 * operands + 2_000, prov["sent"]
    assert prov["sent"] < naive * 8 / 5
    assert prov["rounds"] == 1
