"""`make demo` end to end, small: every protocol runs, the campaign runs, the report says who learned what."""

from __future__ import annotations

import json

import pandas as pd

from mpc_fl.app.demo import PLATFORM_LABEL, POINTS_PER_TAKEUP, REASONS, SHORTLIST_SHARE, run_demo
from mpc_fl.data.synthetic_sme import BANK_FEATURES, PLATFORM_GROUPS
from mpc_fl.protocols import cases


def test_quick_demo_writes_a_complete_report(tmp_path):
    report = run_demo(tmp_path, n_bank=1500, quick=True)
    text = report.read_text()
    for case in cases("demo"):  # every demo case of the registry has its row
        assert f"| {case.label} |" in text
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    # the platform's shortlist: platform-only SMEs, ids only
    listed = pd.read_csv(tmp_path / "shortlist.csv", dtype={"id": str})
    truth = pd.read_csv(tmp_path / "evaluation" / "platform_only_truth.csv", dtype={"id": str})
    assert list(listed.columns) == ["id"] and len(listed) == round(SHORTLIST_SHARE * (1500 // 4))
    assert set(listed["id"]) <= set(truth["id"])
    campaign = json.loads((tmp_path / "results.json").read_text())["campaign"]
    assert campaign["n_attributed"] == campaign["n_converted"] > 0  # walk-ins are not attributed
    assert campaign["points"] == POINTS_PER_TAKEUP * campaign["n_converted"]
    for heading in ("## The referral campaign", "### Attribution", "## Who learned what", "- Shortlist:"):
        assert heading in text
    # the loan applications: each with its reasons, the platform's only as its released groups
    assert "principal reasons in plain words" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and " ms |" not in line]
    reasons = [
        line.rsplit("|", 2)[-2] for line in rows if line.count("|") == 5 and "(" in line.rsplit("|", 2)[-2]
    ]
    assert reasons, "no application shows its reasons"
    allowed = {*BANK_FEATURES, *PLATFORM_GROUPS, f"{PLATFORM_LABEL}: other"}
    for cell in reasons:
        named = [part.rsplit(" (", 1)[0].strip() for part in cell.split(";")]
        assert 1 <= len(named) <= REASONS and set(named) <= allowed, cell
    # what drives the served model: the bank's features by name, the platform's only as its groups
    section = text.split("### What drives the served model", 1)[1].split("\n#", 1)[0]
    inputs = {
        line.split("|")[1].strip()
        for line in section.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    inputs.discard("input")
    assert inputs and inputs <= allowed and inputs & set(PLATFORM_GROUPS), inputs
