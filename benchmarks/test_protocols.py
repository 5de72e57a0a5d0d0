"""Accuracy and cost of every protocol on the same data, split and hyperparameters.

Each case starts the parties (and the dealer) as separate processes with
``mpc-fl party`` and records AUC, KS, precision@10%, bytes and rounds per phase,
and times. ``-m smoke`` runs a tiny version of each case of the smoke suite on breast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _bench import SPLIT, options, record, require_dataset, suite

from mpc_fl.app.jobs import RunRecord
from mpc_fl.app.local import run_protocol_locally


@pytest.fixture(scope="session")
def sme_files(tmp_path_factory) -> tuple[str, str]:
    from mpc_fl.data.synthetic_sme import SMEScenario, write_sme_csvs

    out = tmp_path_factory.mktemp("sme")
    bank, platform = write_sme_csvs(
        out, SMEScenario(n_bank=20000, overlap=0.6, n_platform_only=5000, seed=42)
    )
    return str(bank), str(platform)


def _run(benchmark, tmp_path: Path, files: tuple[str, str], name: str, smoke: bool, align: str) -> RunRecord:
    protocol, opts = options(name, smoke)
    run = benchmark.pedantic(
        lambda: run_protocol_locally(
            Path(files[0]), [Path(files[1])], protocol, opts, tmp_path, align=align, split=SPLIT
        ),
        rounds=1,
        iterations=1,
    )
    record(benchmark, run)
    benchmark.extra_info["case"] = name
    return run


@pytest.mark.smoke
@pytest.mark.parametrize("name", suite("smoke"))
def test_smoke_breast(benchmark, tmp_path, name):
    run = _run(benchmark, tmp_path, require_dataset("breast"), name, smoke=True, align="sorted")
    assert run.metrics["auc"] > 0.9


@pytest.mark.parametrize("name", suite("protocols"))
def test_default_credit(benchmark, tmp_path, name):
    benchmark.extra_info["dataset"] = "default_credit"
    run = _run(benchmark, tmp_path, require_dataset("default_credit"), name, smoke=False, align="sorted")
    assert run.metrics["auc"] > 0.65


@pytest.mark.parametrize("name", suite("protocols"))
def test_sme(benchmark, tmp_path, sme_files, name):
    benchmark.extra_info["dataset"] = "sme"
    run = _run(benchmark, tmp_path, sme_files, name, smoke=False, align="psi")
    assert run.metrics["auc"] > 0.6
