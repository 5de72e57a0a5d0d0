"""`make demo` end to end, small: every protocol runs, the report and shortlist are written."""

from __future__ import annotations

import csv

from mpc_fl.demo import PLAN, SHORTLIST_K, run_demo


def test_quick_demo_writes_a_complete_report(tmp_path):
    report = run_demo(tmp_path, n_bank=1500, quick=True)
    text = report.read_text()
    for _, label, _, _ in PLAN:
        assert label.split(" (")[0] in text
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    rows = list(csv.DictReader(open(tmp_path / "shortlist.csv")))
    assert len(rows) == SHORTLIST_K
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
