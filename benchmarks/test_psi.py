"""ECDH-PSI between two party processes over the real transport: time and bytes vs set size."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from mpc_fl.runtime.local import run_local


def _psi(n: int, overlap: float):
    def fn(session):
        from mpc_fl.psi.ecdh import run_psi

        rng = np.random.default_rng(7)
        common = rng.choice(10**12, size=int(n * overlap), replace=False)
        own = (
            rng.choice(10**12, size=n - len(common), replace=False)
            + (1 if session.role == "bank" else 2) * 10**12
        )
        ids = np.concatenate([common, own])
        peer = "provider" if session.role == "bank" else "bank"
        result = run_psi(session.channel, ids, peer)
        return {
            "n_common": len(result.indices),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    return fn


@pytest.mark.parametrize(
    "n_ids",
    [
        pytest.param(2_000, marks=pytest.mark.smoke),
        10_000,
        100_000,
        pytest.param(1_000_000, marks=pytest.mark.heavy),
    ],
)
def test_psi(benchmark, n_ids):
    overlap = 0.5
    out = benchmark.pedantic(
        lambda: run_local(_psi(n_ids, overlap), uses_crypten=False, timeout_s=3600),
        rounds=1,
        iterations=1,
    )
    assert out["bank"]["result"]["n_common"] == out["provider"]["result"]["n_common"] == int(n_ids * overlap)
    benchmark.extra_info.update(
        {
            "protocol": "psi_ecdh",
            "n_ids_per_side": n_ids,
            "overlap": overlap,
            "parties": {
                r: {"ledger": v["ledger"], "peak_rss_mb": v["result"]["peak_rss_mb"]} for r, v in out.items()
            },
        }
    )
