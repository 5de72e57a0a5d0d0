"""CrypTen's comparisons through the carry-only sign test: exact on edge values, fewer rounds and AND bits."""

from __future__ import annotations

import numpy as np
import torch

from mpc_fl.runtime.local import run_local

ULP = 2.0**-16  # CrypTen's fixed-point step
EDGE_RAW = [0, 1, -1, 2, -2, 2**62, -(2**62), 2**63 - 1, -(2**63), 2**63 - 2, -(2**63) + 1]


def _shares_of(raw: torch.Tensor, rank: int) -> torch.Tensor:
    pad = torch.from_numpy(
        np.random.default_rng(7).integers(-(2**63), 2**63 - 1, size=raw.numel(), dtype=np.int64)
    )
    return raw - pad if rank == 0 else pad


def _compare(session) -> dict:  # noqa: ANN001
    from mpc_fl.crypto.secure_crypten import crypten

    # isort: split
    from crypten.mpc import MPCTensor

    from mpc_fl.crypto import compare

    rank = crypten.communicator.get().get_rank()
    x = torch.tensor([0.0, ULP, -ULP, 2 * ULP, -2 * ULP, 1.0, -1.0, 100.0, -100.0, 3.25, -3.25, 0.5])
    y = torch.tensor([0.0, 0.0, 0.0, ULP, -ULP, 1.0, 1.0 - ULP, 100.0 + ULP, -100.0, -3.25, -3.25 + ULP, 0.5])
    ex, ey = crypten.cryptensor(x, src=0), crypten.cryptensor(y, src=1)
    raw = torch.tensor(EDGE_RAW, dtype=torch.int64)
    ring = MPCTensor.from_shares(_shares_of(raw, rank), precision=16)
    led = session.channel.ledger
    out = {}
    with session.channel.phase("training"):
        out["lt"] = (ex < ey).get_plain_text().tolist()
        out["ge"] = (ex >= ey).get_plain_text().tolist()
        out["relu"] = ex.relu().get_plain_text().tolist()
        out["ring_ltz"] = ring._ltz().get_plain_text().tolist()
    big = crypten.cryptensor(torch.linspace(-50, 50, 1000))

    def calls(fn) -> int:  # noqa: ANN001 - communication calls of fn, as the ledger counts them
        before = led.by_phase["scoring"].rounds if "scoring" in led.by_phase else 0
        with session.channel.phase("scoring"):
            fn()
        return led.by_phase["scoring"].rounds - before

    out["rounds"] = {"ours": calls(big._ltz), "crypten": calls(lambda: compare._crypten_ltz(big))}
    out["exact_precision"] = (ex < ey)._tensor.encoder.scale
    return out


def test_comparisons_are_exact_on_edge_values_and_cheaper_than_cryptens():
    res = run_local(_compare, timeout_s=120)
    x = np.array([0.0, ULP, -ULP, 2 * ULP, -2 * ULP, 1.0, -1.0, 100.0, -100.0, 3.25, -3.25, 0.5])
    y = np.array([0.0, 0.0, 0.0, ULP, -ULP, 1.0, 1.0 - ULP, 100.0 + ULP, -100.0, -3.25, -3.25 + ULP, 0.5])
    for role, r in res.items():
        out = r["result"]
        assert out["lt"] == (x < y).astype(float).tolist(), role
        assert out["ge"] == (x >= y).astype(float).tolist(), role
        assert np.allclose(out["relu"], np.maximum(x, 0.0), atol=ULP), role
        assert out["ring_ltz"] == [float(v < 0) for v in EDGE_RAW], role
        assert out["exact_precision"] == 1
        # six openings, plus one dealer request at party 0 (three calls: request, size, reply);
        # CrypTen's full adder opens eight times and asks the dealer once per AND level
        dealer_calls = 3 if role == "bank" else 0
        assert out["rounds"]["ours"] == 6 + dealer_calls, out["rounds"]
        assert out["rounds"]["crypten"] >= 8 + 8 * dealer_calls, out["rounds"]


def test_three_parties_keep_cryptens_circuit():
    def job(session):  # noqa: ANN001, ANN202
        from mpc_fl.crypto import compare
        from mpc_fl.crypto.secure_crypten import crypten

        x = crypten.cryptensor(torch.tensor([-2.0, 0.0, ULP, 5.0]))
        return {"applies": compare.carry_only_applies(x), "lt": (x < 0).get_plain_text().tolist()}

    res = run_local(job, ("bank", "provider", "provider2"), timeout_s=120)
    for r in res.values():
        assert r["result"]["applies"] is False
        assert r["result"]["lt"] == [1.0, 0.0, 0.0, 0.0]


def test_a_stray_import_of_compare_cannot_compare_over_unpatched_randomness() -> None:
    """compare imports nothing back from secure_crypten: until secure_crypten installs it, ltz refuses."""
    import subprocess
    import sys

    probe = (
        "from mpc_fl.crypto import compare\n"
        "try:\n    compare.ltz(None)\nexcept RuntimeError as err:\n    print('refused:', err)\n"
        "import mpc_fl.crypto.secure_crypten\n"
        "print('installed:', compare.installed(), compare._rng_is_secure())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout
    assert "refused: comparisons need mpc_fl.crypto.secure_crypten's randomness" in out
    assert "installed: True True" in out  # the positive control: the install chain arms it
