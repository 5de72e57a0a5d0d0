"""PSI between two party processes over the real transport (TLS links, ledger): time and bytes.

Every protocol runs through ``mpc_fl.psi.align.intersect``, the function behind ``--align``.
Balanced: n ids per side, half of them common. Unbalanced: a bank with 100,000 customers
against a platform with 10,000,000 ids (50,000 common), the case a bank meets.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import pytest

from mpc_fl.runtime.local import run_local

METHODS = {"ecdh": "ecdh", "rr22": "psi", "kkrt": "kkrt"}  # protocol -> --align value


def _ids(role: str, n_bank: int, n_provider: int, n_common: int) -> np.ndarray:
    """Public, seeded synthetic ids (the same at every run); common ids are random positions."""
    rng = np.random.default_rng(7)
    provider = 10**12 + np.arange(n_provider, dtype=np.int64) * 13
    if role != "bank":
        return rng.permutation(provider)
    common = provider[rng.choice(n_provider, size=n_common, replace=False)]
    own = 2 * 10**12 + np.arange(n_bank - n_common, dtype=np.int64)
    return rng.permutation(np.concatenate([common, own]))


def _psi(method: str, n_bank: int, n_provider: int, n_common: int, receiver: str | None = None):
    def fn(session):
        from mpc_fl.psi.align import intersect
        from mpc_fl.psi.ot import run_ot_psi

        ids = _ids(session.role, n_bank, n_provider, n_common)
        peer = "provider" if session.role == "bank" else "bank"
        start = time.perf_counter()
        if receiver is None:  # the --align path, with its defaults
            rows = intersect(session.channel, ids, peer, method, False)
        else:
            rows = run_ot_psi(session.channel, ids, peer, protocol=method, receiver=receiver).indices
        return {
            "n_common": len(rows),
            "psi_s": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    return fn


def _record(benchmark, out: dict, **info) -> None:
    benchmark.extra_info.update(
        {
            **info,
            "psi_s": {r: v["result"]["psi_s"] for r, v in out.items()},
            "parties": {
                r: {"ledger": v["ledger"], "peak_rss_mb": v["result"]["peak_rss_mb"]} for r, v in out.items()
            },
        }
    )


@pytest.mark.parametrize(
    "protocol,n_ids",
    [
        pytest.param("ecdh", 2_000, marks=pytest.mark.smoke),
        pytest.param("rr22", 2_000, marks=pytest.mark.smoke),
        pytest.param("kkrt", 2_000, marks=pytest.mark.smoke),
        *[(p, n) for p in METHODS for n in (10_000, 100_000)],
        *[pytest.param(p, 1_000_000, marks=pytest.mark.heavy) for p in METHODS],
    ],
)
def test_psi(benchmark, protocol, n_ids):
    overlap = 0.5
    n_common = int(n_ids * overlap)
    out = benchmark.pedantic(
        lambda: run_local(
            _psi(METHODS[protocol], n_ids, n_ids, n_common), uses_crypten=False, timeout_s=3600
        ),
        rounds=1,
        iterations=1,
    )
    assert out["bank"]["result"]["n_common"] == out["provider"]["result"]["n_common"] == n_common
    _record(benchmark, out, protocol=f"psi_{protocol}", n_ids_per_side=n_ids, overlap=overlap)


@pytest.mark.heavy
@pytest.mark.parametrize("protocol,receiver", [("rr22", "smaller"), ("rr22", "larger"), ("kkrt", "smaller")])
def test_psi_unbalanced(benchmark, protocol, receiver):
    n_bank, n_provider, n_common = 100_000, 10_000_000, 50_000
    method = METHODS[protocol] if receiver == "smaller" else protocol
    out = benchmark.pedantic(
        lambda: run_local(
            _psi(method, n_bank, n_provider, n_common, receiver), uses_crypten=False, timeout_s=3600
        ),
        rounds=1,
        iterations=1,
    )
    assert out["bank"]["result"]["n_common"] == out["provider"]["result"]["n_common"] == n_common
    _record(
        benchmark, out, protocol=f"psi_{protocol}", receiver=receiver, n_bank=n_bank, n_provider=n_provider,
        n_common=n_common,
    )  # fmt: skip
