"""Cost vs rows on the synthetic SME scenario: bytes, rounds, time and peak memory per party.

10,000, 100,000 and 1,000,000 training rows (the bank's 80% share of 12,500 ... 1,250,000
common customers). Short schedules (one LR epoch, three depth-3 trees) so that every
protocol runs at every size it can, measured in full (nothing extrapolated); costs are
reported per iteration or per tree. SS-GBDT runs at 1,000,000 rows because its one-hot bin
matrices are never dense: the owner keeps bin indices and a mask key, the mask is regenerated
in row blocks, and only the other party holds the opening (mpc_fl.crypto.fixed_mask.OneHotMaskMatrix).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _bench import LR, SPLIT, options, record, suite

from mpc_fl.app.local import run_protocol_locally

#: common customers; 80% of them are training rows
SIZES = [12_500, 125_000, 1_250_000]
#: largest size each protocol runs at here (every protocol runs at every size at present)
LIMITS = {"ss_gbdt": 1_250_000}
CASES = suite("scaling")


@pytest.fixture(scope="module")
def sme_by_size(tmp_path_factory):
    from mpc_fl.data.synthetic_sme import SMEScenario, write_sme_csvs

    def make(n_bank: int) -> tuple[Path, Path]:
        out = tmp_path_factory.mktemp(f"sme{n_bank}")
        return write_sme_csvs(out, SMEScenario(n_bank=n_bank, overlap=1.0, n_platform_only=0, seed=42))

    return make


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n_bank", SIZES)
def test_scaling(benchmark, tmp_path, sme_by_size, n_bank, name):
    if n_bank > LIMITS.get(name, n_bank):
        pytest.skip(f"{name} runs up to {LIMITS[name]:,} customers here (beyond that it runs out of memory)")
    bank, platform = sme_by_size(n_bank)
    protocol, opts = options(name)
    if protocol.endswith("lr"):
        opts = {**opts, "n_epochs": 1, "batch_size": LR["batch_size"]}
    else:
        opts = {**opts, "n_trees": 3, "max_depth": 3}
    run = benchmark.pedantic(
        lambda: run_protocol_locally(bank, [platform], protocol, opts, tmp_path, align="sorted", split=SPLIT),
        rounds=1,
        iterations=1,
    )
    record(benchmark, run)
    benchmark.extra_info.update({"case": name, "dataset": "sme", "n_bank": n_bank})
