"""Runs that hold up on a busy machine: PSI then each protocol, many times, beside a CPU burner.

Why: on a loaded machine a late frame of the PSI library was once read by the next phase
(``'utf-8' codec can't decode byte 0x8c``), and the library once crashed. Every phase now has
its own typed stream and PSI ends with a barrier (``mpc_fl/runtime/channel.py``,
``mpc_fl/psi/barrier.py``); this suite checks it the hard way: each protocol runs ``RUNS``
times through the real party processes (RR22 alignment, then training and scoring) while a
process of its own keeps a core busy, and every failure is recorded with its line.

Heavy (about 45 minutes on 2 cores): ``pytest benchmarks/test_stress.py -m heavy --benchmark-json=benchmarks/results/stress.json``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _bench import family, options, suite

from mpc_fl.app.local import run_protocol_locally
from mpc_fl.runtime.local import PartyFailed

RUNS = 50
#: Bank customers of the synthetic SME scenario each run aligns (60% also at the platform).
N_BANK = 2000
#: The registry's stress cases (SS-GBDT's oblivious mode runs the same phases over the same streams
#: as its default mode, so it is not one of them: the suite stays within the hour).
CASES = suite("stress")
#: The smoke settings, with the LR family's floor of 50 steps lifted (2,048-bit Paillier spent a
#: minute per run on it): what is stressed is alignment and the phases around training.
FAST = {"lr": {"min_iterations": 0}, "gbdt": {}}


@pytest.fixture(scope="module")
def sme_files(tmp_path_factory) -> tuple[Path, Path]:
    from mpc_fl.data.synthetic_sme import SMEScenario, write_sme_csvs

    out = tmp_path_factory.mktemp("sme")
    return write_sme_csvs(out, SMEScenario(n_bank=N_BANK, overlap=0.6, n_platform_only=N_BANK // 4, seed=7))


class CPUBurner:
    """One process that keeps one core busy until stopped (the busy machine of the report)."""

    def __enter__(self) -> CPUBurner:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.mark.heavy
@pytest.mark.parametrize("name", CASES)
def test_psi_then_protocol_under_load(benchmark, tmp_path, sme_files, name):
    protocol, opts = options(name, smoke=True)
    opts = {**opts, **FAST[family(name)]}
    failures: list[str] = []
    loads: list[float] = []

    def runs() -> None:
        with CPUBurner():
            time.sleep(2.0)  # the burner is running before the first run starts
            for i in range(RUNS):
                loads.append(os.getloadavg()[0])
                try:
                    run_protocol_locally(
                        sme_files[0], [sme_files[1]], protocol, opts, tmp_path / "run", align="psi"
                    )
                except PartyFailed as err:
                    failures.append(f"run {i}: {str(err).splitlines()[0]}")

    benchmark.pedantic(runs, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {
            "protocol": name,
            "runs": RUNS,
            "failures": len(failures),
            "failure_lines": failures,
            "load_avg": round(sum(loads) / len(loads), 2),
            "load_avg_max": max(loads),
            "params": opts,
            "alignment": "psi (RR22)",
            "n_bank": N_BANK,
        }
    )
    assert not failures, failures
