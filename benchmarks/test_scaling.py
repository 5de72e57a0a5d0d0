"""Cost vs rows on the synthetic SME scenario: bytes and time per iteration / per tree.

Short schedules (one LR epoch, three depth-3 trees) so that every protocol runs at
every size; costs are reported per iteration or per tree.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _bench import LR, SPLIT, options, record

from mpc_fl.runs import run_protocol_locally

SIZES = [2500, 5000, 10000]
CASES = ["plain_lr", "ss_lr", "paillier_lr_2048", "plain_gbdt", "ss_gbdt", "secureboost_2048"]


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
