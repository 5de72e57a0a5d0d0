"""Benchmark configurations and helpers: one place for the hyperparameters every protocol of a family shares.

Fairness rule: within a family (LR or GBDT) every protocol gets the same data split,
the same hyperparameters and the same ledger; they differ only in how they compute.
"""

from __future__ import annotations

import pytest

from mpc_fl.config import data_root

#: LR family: mini-batch GD, 3 epochs of 1024-row batches, lr 0.5 (mpc_fl.models.lr.LRParams defaults).
LR = {"learning_rate": 0.5, "n_epochs": 3, "batch_size": 1024, "sigmoid": "poly"}
#: GBDT family: the issue's reference setting for secure trees.
GBDT = {"n_trees": 20, "max_depth": 4, "learning_rate": 0.3, "n_bins": 32}

#: The HE baselines' two schemes at equal (or better) security: OU at 3072 bits (the default) and ZPaillier at
#: 2048 (see mpc_fl.crypto.paillier.SCHEMES); shorter keys are refused outside tests.
OU = {"scheme": "ou", "key_bits": 3072}
PAILLIER = {"scheme": "paillier", "key_bits": 2048}

#: (protocol, family, extra options).
PROTOCOLS: dict[str, tuple[str, str, dict]] = {
    "plain_lr": ("plain_lr", "lr", {}),
    "ss_lr": ("ss_lr", "lr", {"mask": "fixed"}),
    "paillier_lr_ou3072": ("paillier_lr", "lr", OU),
    "paillier_lr_2048": ("paillier_lr", "lr", PAILLIER),
    "plain_gbdt": ("plain_gbdt", "gbdt", {}),
    "ss_gbdt": ("ss_gbdt", "gbdt", {"mask": "fixed"}),
    "ss_gbdt_oblivious": ("ss_gbdt", "gbdt", {"mask": "fixed", "oblivious": True}),
    "secureboost_ou3072": ("secureboost", "gbdt", OU),
    "secureboost_2048": ("secureboost", "gbdt", PAILLIER),
}

#: Benchmarks run on public data (real public datasets, our synthetic SME data), where the
#: reference split is fine and keeps every protocol on the same rows run after run. Private
#: labels get the default keyed random split (`--split random`), see mpc_fl/data/split.py.
SPLIT = "stratified-public"

#: Tiny settings for the CI smoke subset (breast): each protocol runs end to end once.
SMOKE_LR = {**LR, "n_epochs": 1}
SMOKE_GBDT = {**GBDT, "n_trees": 2, "max_depth": 2}


def options(name: str, smoke: bool = False) -> tuple[str, dict]:
    protocol, family, extra = PROTOCOLS[name]
    base = (SMOKE_LR if smoke else LR) if family == "lr" else (SMOKE_GBDT if smoke else GBDT)
    return protocol, {**base, **extra}


def require_dataset(name: str) -> tuple[str, str]:
    folder = data_root() / name
    if not (folder / "guest.csv").is_file():
        pytest.skip(f"dataset {name!r} not found under {data_root()} (set MPC_FL_DATA)")
    return str(folder / "guest.csv"), str(folder / "host.csv")


def record(benchmark, run: dict) -> None:  # noqa: ANN001
    """Store a run record (metrics, traffic by phase, params, provenance) in the benchmark JSON."""
    benchmark.extra_info.update(
        {
            k: run[k]
            for k in ("protocol", "params", "metrics", "n_aligned", "n_train", "fit_s", "score_s", "wall_s")
        }
    )
    benchmark.extra_info["traffic"] = run["traffic"]
    benchmark.extra_info["parties"] = {
        r: {
            "ledger": p["ledger"],
            "fit_s": p["fit_s"],
            "score_s": p["score_s"],
            "peak_rss_mb": p["peak_rss_mb"],
        }
        for r, p in run["parties"].items()
    }
    for k in ("alignment", "split", "dealer", "links", "run_info"):
        benchmark.extra_info[k] = run[k]
