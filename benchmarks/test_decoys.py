"""What hiding the applicant costs: the scoring service with and without its anonymity sets.

Each case trains once on default_credit (the public reference split, the benchmark
hyperparameters) and starts two services on the same saved parts: one with the default
decoys (each application sent within its fixed anonymity set of 10 to 19 of the bank's
customers) and one with none (``--decoys 0 --decoys-policy warn``: the provider sees every
applicant). The same test-set applicants are scored by both, alternating in blocks of 50, so
machine drift falls on both alike; the ratio of their latencies is the price of the guarantee.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from _bench import GBDT, LR, SPLIT, require_dataset

from mpc_fl.runs import LocalService, run_protocol_locally
from mpc_fl.serving import DecoySettings

CASES = {"ss_lr": ("ss_lr", {**LR, "mask": "fixed"}), "ss_gbdt": ("ss_gbdt", {**GBDT, "mask": "fixed"})}
VARIANTS = {"anonymity_sets": DecoySettings(), "no_decoys": DecoySettings(0, "warn")}
N_QUERIES, BLOCK = 600, 50


@pytest.mark.parametrize("name", list(CASES))
def test_decoys(benchmark, tmp_path, name):
    bank_csv, provider_csv = (Path(p) for p in require_dataset("default_credit"))
    protocol, opts = CASES[name]
    run = run_protocol_locally(
        bank_csv, [provider_csv], protocol, opts, tmp_path / "train", align="sorted", split=SPLIT,
        keep_scores=True, save_models=tmp_path / "models",
    )  # fmt: skip
    services = {}
    for variant, decoys in VARIANTS.items():
        (tmp_path / variant).mkdir()
        services[variant] = LocalService(
            tmp_path / "models", bank_csv, provider_csv, tmp_path / variant, decoys=decoys
        )
    ids = run["parties"]["bank"]["test_ids"]
    latencies: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rows: dict[str, int] = {}
    try:
        for s in services.values():  # warm-up
            for i in ids[:20]:
                s.bank.score(i)

        def alternate() -> None:
            for start in range(0, N_QUERIES, BLOCK):
                for variant, s in services.items():
                    for i in ids[start : start + BLOCK]:
                        t0 = time.perf_counter()
                        (r,) = s.bank.score(i)
                        latencies[variant].append(time.perf_counter() - t0)
                        assert r.error is None, r.error

        benchmark.pedantic(alternate, rounds=1, iterations=1)
        sets = services["anonymity_sets"].bank.anonymity
        rows = {
            "anonymity_sets": float(np.mean([len(sets.query([i])) for i in ids[:N_QUERIES]])),
            "no_decoys": 1.0,
        }
    finally:
        for s in services.values():
            s.stop()
    p50 = {v: float(np.percentile(np.array(lat) * 1e3, 50)) for v, lat in latencies.items()}
    p99 = {v: float(np.percentile(np.array(lat) * 1e3, 99)) for v, lat in latencies.items()}
    benchmark.extra_info.update(
        {
            "case": name,
            "protocol": protocol,
            "dataset": "default_credit",
            "params": run["params"],
            "n_queries": N_QUERIES,
            "decoys": {v: d.k for v, d in VARIANTS.items()},
            "rows_per_query": rows,
            "p50_ms": p50,
            "p99_ms": p99,
            "p50_ratio": p50["anonymity_sets"] / p50["no_decoys"],
        }
    )
