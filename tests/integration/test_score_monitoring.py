"""Scoring a bank can monitor: each party's population stability, locally, and scorecard points.

Parties are separate processes (``mpc-fl score`` runs one per party). Stability is computed by
each party for its own features against the reference its model part keeps; a shifted provider
feature is flagged at the provider only, and the command warns with one line naming it.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mpc_fl.app.local import run_protocol_locally, score_locally
from mpc_fl.data.synthetic_sme import SMEScenario, write_sme_csvs

CLI = [sys.executable, "-m", "mpc_fl.app.cli"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("monitoring")
    bank, platform = write_sme_csvs(
        root / "data", SMEScenario(n_bank=1500, overlap=0.8, n_platform_only=0, seed=4)
    )
    run_protocol_locally(
        bank, [platform], "ss_lr", {"n_epochs": 2}, root / "train", save_models=root / "models"
    )
    drifted = root / "data" / "platform_drifted.csv"
    frame = pd.read_csv(platform)
    frame["monthly_spend"] = (
        frame["monthly_spend"] * 3.0
    )  # the platform's customers now spend three times more
    frame.to_csv(drifted, index=False)
    return {"root": root, "bank": bank, "platform": platform, "drifted": drifted, "models": root / "models"}


def test_the_training_population_is_stable_at_every_party(trained):
    record = score_locally(
        trained["bank"], [trained["platform"]], trained["models"], trained["root"] / "same"
    )
    bank, provider = record.parties["bank"].stability, record.parties["provider"].stability
    assert set(bank) == {"account_age_months", "log_avg_balance", "n_products", "overdraft_days", "score"}
    assert "monthly_spend" in provider and "score" not in provider  # each party only its own
    assert max(bank.values()) < 0.1 and max(provider.values()) < 0.1


def test_a_shifted_provider_feature_is_flagged_at_the_provider_and_warned(trained):
    out = trained["root"] / "drift"
    done = subprocess.run(
        [*CLI, "score", "--models", str(trained["models"]), "--bank", str(trained["bank"]), "--provider",
         str(trained["drifted"]), "--out-dir", str(out), "--quiet", "--scorecard", "pdo=20,base=600,odds=50"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "population drift" in line]
    assert len(warnings) == 1 and warnings[0].startswith("[provider]") and "monthly_spend" in warnings[0]
    run_dir = next(out.iterdir())
    assert (run_dir / "stability.png").stat().st_size > 5_000
    scores = pd.read_csv(run_dir / "scores.csv")
    assert list(scores.columns) == ["id", "score", "points"]
    p = scores["score"].to_numpy()
    expected = 600 - 20 / math.log(2) * math.log(50) + 20 / math.log(2) * np.log(p / (1 - p))
    np.testing.assert_allclose(scores["points"], expected, atol=0.06)  # points written to 0.1


def test_a_bad_scorecard_is_refused_before_anything_starts(trained):
    done = subprocess.run(
        [*CLI, "score", "--models", str(trained["models"]), "--bank", str(trained["bank"]), "--provider",
         str(trained["platform"]), "--out-dir", str(trained["root"] / "bad"), "--scorecard", "pdo=0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "pdo" in done.stderr and len(done.stderr.strip().splitlines()) == 1
