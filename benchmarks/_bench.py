"""Benchmark configurations and helpers: one place for the hyperparameters every protocol of a family shares.

Fairness rule: within a family (LR or GBDT) every protocol gets the same data split,
the same hyperparameters and the same ledger; they differ only in how they compute.
"""

from __future__ import annotations

import pytest

from mpc_fl.app.jobs import RunRecord
from mpc_fl.config import data_root
from mpc_fl.protocols import FAMILIES, case, cases

#: The family settings every case starts from (mpc_fl.protocols.FAMILIES): within a family every
#: protocol gets the same hyperparameters.
LR = FAMILIES["lr"]["default"]
GBDT = FAMILIES["gbdt"]["default"]

#: Benchmarks run on public data (real public datasets, our synthetic SME data), where the
#: reference split is fine and keeps every protocol on the same rows run after run. Private
#: labels get the default keyed random split (`--split random`), see mpc_fl/data/split.py.
SPLIT = "stratified-public"


def suite(name: str) -> list[str]:
    """The names of the cases a benchmark suite runs (mpc_fl.protocols.CASES, in the table's order)."""
    return [c.name for c in cases(name)]


def options(name: str, smoke: bool = False) -> tuple[str, dict]:
    """A case's protocol and its options: its family's default (or smoke) setting, then its own."""
    c = case(name)
    return c.protocol, c.settings("smoke" if smoke else "default")


def family(name: str) -> str:
    from mpc_fl.protocols import REGISTRY

    return REGISTRY[case(name).protocol].family


def require_dataset(name: str) -> tuple[str, str]:
    folder = data_root() / name
    if not (folder / "guest.csv").is_file():
        pytest.skip(f"dataset {name!r} not found under {data_root()} (set MPC_FL_DATA)")
    return str(folder / "guest.csv"), str(folder / "host.csv")


def record(benchmark, run: RunRecord) -> None:  # noqa: ANN001
    """Store a run record (metrics, traffic by phase, params, provenance) in the benchmark JSON."""
    benchmark.extra_info.update(
        {
            "protocol": run.protocol,
            "params": run.params,
            "metrics": run.metrics,
            "n_aligned": run.n_aligned,
            "n_train": run.n_train,
            "fit_s": run.fit_s,
            "score_s": run.score_s,
            "wall_s": run.wall_s,
        }
    )
    benchmark.extra_info["traffic"] = run.traffic
    benchmark.extra_info["parties"] = {
        r: {"ledger": p.ledger, "fit_s": p.fit_s, "score_s": p.score_s, "peak_rss_mb": p.peak_rss_mb}
        for r, p in run.parties.items()
    }
    for k in ("alignment", "split", "dealer", "links", "run_info"):
        benchmark.extra_info[k] = getattr(run, k)
