"""Generic CrypTen Beaver products vs the fixed-mask correlation: bytes per iteration / per tree.

Same data (default_credit), same schedule; only the way the fixed matrix is
multiplied differs. LR is also measured with each sigmoid method: with two parties and the
fixed mask, "poly", "hard" and "taylor1" run on the online engine (one dealer request, then
only openings; :mod:`mpc_fl.crypto.online`), "exact" and every generic-mask case on CrypTen's
own operations, so the cases also give each sigmoid's rounds per iteration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _bench import LR, SPLIT, record, require_dataset

from mpc_fl.app.local import run_protocol_locally


@pytest.mark.parametrize("sigmoid", ["poly", "exact", "hard", "taylor1"])
@pytest.mark.parametrize("mask", ["generic", "fixed"])
def test_ss_lr_mask(benchmark, tmp_path, mask, sigmoid):
    files = require_dataset("default_credit")
    opts = {**LR, "n_epochs": 1, "sigmoid": sigmoid, "mask": mask}
    run = benchmark.pedantic(
        lambda: run_protocol_locally(
            Path(files[0]), [Path(files[1])], "ss_lr", opts, tmp_path, align="sorted", split=SPLIT
        ),
        rounds=1,
        iterations=1,
    )
    record(benchmark, run)
    benchmark.extra_info.update({"case": f"ss_lr_{mask}_{sigmoid}", "dataset": "default_credit"})


@pytest.mark.parametrize("mask", ["generic", "fixed"])
def test_ss_gbdt_mask(benchmark, tmp_path, mask):
    files = require_dataset("default_credit")
    opts = {"n_trees": 1, "max_depth": 2, "learning_rate": 0.3, "n_bins": 32, "mask": mask}
    run = benchmark.pedantic(
        lambda: run_protocol_locally(
            Path(files[0]), [Path(files[1])], "ss_gbdt", opts, tmp_path, align="sorted", split=SPLIT
        ),
        rounds=1,
        iterations=1,
    )
    record(benchmark, run)
    benchmark.extra_info.update({"case": f"ss_gbdt_{mask}", "dataset": "default_credit"})
