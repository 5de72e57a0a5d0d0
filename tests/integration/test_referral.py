"""The referral job at the command line: a prospect model, the platform's shortlist, the attribution.

Parties are separate ``mpc-fl`` processes over the authenticated links (the local runners start
one per party and the dealer). Bad input ends in one line and exit 2 within seconds.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mpc_fl.app.local import attribute_locally, run_protocol_locally, shortlist_locally
from mpc_fl.data.synthetic_sme import SMEScenario, write_sme_csvs, write_truth_csv

CLI = [sys.executable, "-m", "mpc_fl.app.cli"]
SCENARIO = SMEScenario(n_bank=800, overlap=0.6, n_platform_only=300, seed=9)
K = 30


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("referral")
    bank, platform = write_sme_csvs(root / "data", SCENARIO)
    truth = write_truth_csv(root / "evaluation" / "truth.csv", SCENARIO)
    only = pd.read_csv(truth)["id"]
    frame = pd.read_csv(platform)
    prospects = root / "data" / "prospects.csv"
    frame[frame["id"].isin(only)].to_csv(prospects, index=False)
    models = root / "models"
    record = run_protocol_locally(
        bank, [platform], "ss_lr", {"n_epochs": 3}, root / "train", save_models=models, features="providers"
    )
    assert record.parties["bank"].n_aligned == SCENARIO.n_overlap
    return {
        "root": root,
        "bank": bank,
        "platform": platform,
        "prospects": prospects,
        "truth": truth,
        "models": models,
    }


def _cli(*args: str, timeout: float = 120) -> tuple[int, str, float]:
    """Exit code, the error lines on stderr (progress lines left out), seconds taken."""
    t0 = time.monotonic()
    done = subprocess.run([*CLI, *args, "--quiet"], capture_output=True, text=True, timeout=timeout)
    errors = "\n".join(line for line in done.stderr.splitlines() if "error" in line)
    return done.returncode, errors, time.monotonic() - t0


def test_the_platform_gets_its_top_k_and_the_bank_only_k(scenario):
    out = scenario["root"] / "top_k"
    record = shortlist_locally(scenario["prospects"], scenario["models"], out, top_k=K)
    bank, platform = record.parties["bank"], record.parties["provider"]
    listed = pd.read_csv(record.shortlist_file)["id"].astype(str).tolist()
    prospects = pd.read_csv(scenario["prospects"])["id"].astype(str)
    assert len(listed) == K == platform.k == bank.k and set(listed) <= set(prospects)
    assert listed == platform.shortlist and bank.shortlist is None and platform.scores is None
    assert bank.n_scored == platform.n_scored == SCENARIO.n_platform_only
    # nothing the bank wrote names a prospect
    bank_text = (out / "bank.json").read_text() + (out / "logs" / "bank.detail.log").read_text()
    assert not [i for i in prospects if i in bank_text]
    # the list is better than random among the platform-only SMEs (the ground truth, read only here)
    truth = pd.read_csv(scenario["truth"]).astype({"id": str}).set_index("id")
    assert truth.loc[listed, "propensity"].mean() > 1.3 * truth["propensity"].mean()


def test_a_threshold_the_bank_keeps_and_scores_both_sides_agreed_to_reveal(scenario):
    out = scenario["root"] / "threshold"
    record = shortlist_locally(
        scenario["prospects"], scenario["models"], out, threshold=0.3, reveal_scores=True
    )
    platform = record.parties["provider"]
    listed = pd.read_csv(record.shortlist_file)
    assert list(listed.columns) == ["id", "score"] and len(listed) == record.k == record.parties["bank"].k
    assert (listed["score"] >= 0.3 - 1e-3).all() and platform.scores is not None


def test_attribution_gives_each_side_exactly_the_referred_takeups(scenario):
    root = scenario["root"]
    truth = pd.read_csv(scenario["truth"])
    referred = truth["id"].iloc[:60]
    took_up = pd.concat([truth["id"].iloc[40:80], pd.Series([123, 456])])  # 20 of them referred
    (root / "referred.csv").write_text("id\n" + "".join(f"{i}\n" for i in referred))
    (root / "takeups.csv").write_text("id\n" + "".join(f"{i}\n" for i in took_up))
    record = attribute_locally(
        root / "referred.csv", root / "takeups.csv", root / "attribution", points_per_takeup=500
    )
    expected = sorted(str(i) for i in set(referred) & set(took_up))
    assert len(expected) == 20
    for role in ("bank", "provider"):
        assert record.parties[role].matched == expected
        assert pd.read_csv(record.matches[role])["id"].astype(str).tolist() == expected
    assert record.parties["provider"].n_peer == len(took_up) and record.parties["bank"].n_peer == len(
        referred
    )
    assert record.points == 20 * 500 and record.parties["bank"].points == 0


@pytest.mark.parametrize(
    "case",
    ["known customers", "k above the population", "no prospect above the threshold", "two selections"],
)
def test_bad_shortlist_input_gets_one_line_and_exit_2(scenario, case):
    base = ["shortlist", "--models", str(scenario["models"]), "--out-dir", str(scenario["root"] / "bad")]
    args, expect = {
        "known customers": (["--prospects", str(scenario["platform"]), "--top-k", "5"], "already the bank's"),
        "k above the population": (
            ["--prospects", str(scenario["prospects"]), "--top-k", "5000"],
            "at most 300",
        ),
        "no prospect above the threshold": (
            ["--prospects", str(scenario["prospects"]), "--threshold", "0.9999"],
            "the shortlist is empty",
        ),
        "two selections": (
            ["--prospects", str(scenario["prospects"]), "--top-k", "5", "--threshold", "0.5"],
            "exactly one of --top-k",
        ),
    }[case]
    code, err, took = _cli(*base, *args)
    assert code == 2 and expect in err and len(err.splitlines()) == 1, err
    assert took < 60, took


def test_known_customers_can_be_dropped_on_request(scenario):
    out = scenario["root"] / "dropped"
    record = shortlist_locally(scenario["platform"], scenario["models"], out, top_k=10, drop_known=True)
    platform = record.parties["provider"]
    assert platform.n_dropped_known == SCENARIO.n_overlap and platform.n_scored == SCENARIO.n_platform_only


@pytest.mark.parametrize("case", ["duplicates", "empty"])
def test_bad_attribution_lists_get_one_line_and_exit_2(scenario, case):
    root = scenario["root"]
    bad = root / f"referred-{case}.csv"
    bad.write_text("id\n1\n2\n2\n" if case == "duplicates" else "id\n")
    good = root / "good-takeups.csv"
    good.write_text("id\n1\n5\n")
    code, err, took = _cli(
        "attribute", "--referred", str(bad), "--takeups", str(good), "--out-dir", str(root / "a")
    )
    expect = "more than once" if case == "duplicates" else "no data rows"
    assert code == 2 and expect in err and len(err.splitlines()) == 1, err
    assert took < 60


def test_a_model_with_the_banks_features_is_refused(scenario):
    root = scenario["root"]
    models = root / "joint-models"
    run_protocol_locally(scenario["bank"], [scenario["platform"]], "ss_lr", {"n_epochs": 1}, root / "joint",
                         save_models=models)  # fmt: skip
    code, err, _ = _cli("shortlist", "--models", str(models), "--prospects", str(scenario["prospects"]),
                        "--top-k", "5", "--out-dir", str(root / "bad"))  # fmt: skip
    assert code == 2 and "--features providers" in err and len(err.splitlines()) == 1, err
