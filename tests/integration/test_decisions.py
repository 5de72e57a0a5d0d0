"""Loan decisions with reasons, end to end: each party a process, reasons beside the scores.

The platform trains its part with ``--release group`` (two named groups); the bank scores with
``--reasons 3``. The secure protocols' reasons agree with the plaintext twin's on the same rows
(same split, same schedule; LR against plain_lr, trees against plain_gbdt), the platform's features appear only as its groups, and the points
column and the reasons' points add up. Bad requests are one line, before anything starts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mpc_fl.app.local import run_protocol_locally, score_locally
from mpc_fl.data.synthetic_sme import BANK_FEATURES, SMEScenario, write_sme_csvs
from mpc_fl.models.reasons import Reasons, agreement
from tests.budget import budget_s

CLI = [sys.executable, "-m", "mpc_fl.app.cli"]
GROUPS = {
    "delivery activity": ["orders_per_month", "n_distinct_routes", "route_spread_km"],
    "payment behaviour": ["late_payment_rate", "payment_method_card_share", "cancellation_rate"],
}
R = 3
_TREES = {"n_trees": 3, "max_depth": 3}
#: every protocol that gives reasons (all of them), the plaintext twins first
CASES = {
    "plain_lr": ("plain_lr", {"n_epochs": 2}),
    "ss_lr": ("ss_lr", {"n_epochs": 2}),
    "paillier_lr": ("paillier_lr", {"n_epochs": 2}),
    "plain_gbdt": ("plain_gbdt", _TREES),
    "ss_gbdt": ("ss_gbdt", _TREES),
    "ss_gbdt_oblivious": ("ss_gbdt", {**_TREES, "oblivious": True}),
    "secureboost": ("secureboost", _TREES),
}
TWINS = {"ss_lr": "plain_lr", "paillier_lr": "plain_lr", "ss_gbdt": "plain_gbdt",
         "ss_gbdt_oblivious": "plain_gbdt", "secureboost": "plain_gbdt"}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("decisions")
    # every SME in both files, in the same order: aligned by a hash check, no PSI per run (CI time)
    bank, platform = write_sme_csvs(
        root / "data", SMEScenario(n_bank=1500, overlap=1.0, n_platform_only=0, seed=6)
    )
    groups = root / "groups.json"
    groups.write_text(json.dumps(GROUPS))
    out = {"root": root, "bank": bank, "platform": platform, "groups": groups}
    for case, (protocol, opts) in CASES.items():
        run_protocol_locally(
            bank, [platform], protocol, opts, root / f"train-{case}", split="stratified-public", align="sorted",
            save_models=root / case, release="group", groups=str(groups), timeout_s=budget_s(120),
        )  # fmt: skip
        rec = score_locally(bank, [platform], root / case, root / f"score-{case}", reasons=R, align="sorted")
        out[case] = rec.parties["bank"]
    return out


def _table(report, names: list[str]) -> Reasons:  # noqa: ANN001
    index = {n: k for k, n in enumerate(names)}
    order = np.argsort(report.ids)
    units = np.array([[index[n] for n, _ in report.reasons[i]] for i in order])
    values = np.array([[v for _, v in report.reasons[i]] for i in order])
    return Reasons(tuple(names), units, values)


def test_secure_reasons_agree_with_the_plaintext_twins(trained):
    for protocol, twin in TWINS.items():
        got, plain = trained[protocol], trained[twin]
        assert sorted(got.ids) == sorted(plain.ids)
        names = sorted({n for rep in (got, plain) for row in rep.reasons for n, _ in row})
        share = agreement(_table(got, names), _table(plain, names))
        assert share >= 0.99, (protocol, share)


def test_the_platform_is_named_only_by_its_groups(trained):
    for protocol in CASES:
        names = {n for row in trained[protocol].reasons for n, _ in row}
        allowed = {*BANK_FEATURES, *GROUPS, "partner data: other"}
        assert names <= allowed and names & set(GROUPS), (protocol, names)
        assert all(len(row) == R for row in trained[protocol].reasons)
        values = np.array([[v for _, v in row] for row in trained[protocol].reasons])
        assert np.all(np.diff(values, axis=1) <= 1e-9)  # strongest first


def test_the_scores_file_carries_reasons_and_their_points(trained):
    out = trained["root"] / "cli"
    done = subprocess.run(
        [*CLI, "score", "--models", str(trained["root"] / "ss_lr"), "--bank", str(trained["bank"]), "--provider",
         str(trained["platform"]), "--out-dir", str(out), "--quiet", "--reasons", "2", "--adverse", "y1",
         "--scorecard", "pdo=20,base=600,odds=50,higher=y0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scores = pd.read_csv(next(out.iterdir()) / "scores.csv")
    assert list(scores.columns) == ["id", "score", "points", "reason_1", "points_1", "reason_2", "points_2"]
    assert (scores["points_1"] <= scores["points_2"] + 0.05).all()  # the first reason costs the most points


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--reasons", "3", "--adverse", "y0", "--scorecard", "higher=y0"], "gives that outcome more points"),
        (["--reasons", "11"], "--reasons must be 0 to 10"),
    ],
)
def test_bad_reason_requests_are_one_line_before_anything_starts(trained, extra, says):
    done = subprocess.run(
        [*CLI, "score", "--models", str(trained["root"] / "ss_lr"), "--bank", str(trained["bank"]), "--provider",
         str(trained["platform"]), "--out-dir", str(trained["root"] / "bad"), *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, (
        done.stderr
    )
    assert not (trained["root"] / "bad").exists()


def test_a_grouping_of_features_the_platform_lacks_stops_training_in_one_line(trained, tmp_path):
    groups = tmp_path / "g.json"
    groups.write_text(json.dumps({"activity": ["orders_per_month", "no_such_feature"]}))
    done = subprocess.run(
        [*CLI, "run", "--bank", str(trained["bank"]), "--provider", str(trained["platform"]), "--protocol",
         "plain_lr", "--release", "group", "--groups", str(groups), "--out-dir", str(tmp_path / "r"), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "no_such_feature" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
