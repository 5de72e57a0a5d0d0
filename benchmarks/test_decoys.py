"""What hiding the applicant costs: the scoring service with and without its anonymity sets.

Each case trains once on default_credit (the public reference split, the benchmark
hyperparameters) and starts two services on the same saved parts: one with the default
decoys (each application sent within its fixed anonymity set of 10 to 19 of the bank's
customers) and one with none (``--decoys 0 --decoys-policy warn``: the provider sees every
applicant). The same test-set applicants are scored by both, in blocks of 150 that alternate
(ABBA), each block on a freshly started service (CrypTen holds one session per process), so
machine drift falls on both alike; the ratio of their latencies is the price of the guarantee.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from _bench import SPLIT, options, require_dataset

from mpc_fl.app.local import LocalService, run_protocol_locally
from mpc_fl.app.serving import DecoySettings

#: the cases whose service hides applicants among decoys (the CrypTen protocols)
CASES = ["ss_lr", "ss_gbdt"]
VARIANTS = {"anonymity_sets": DecoySettings(), "no_decoys": DecoySettings(0, "warn")}
N_QUERIES, BLOCK = 600, 150


@pytest.mark.parametrize("name", CASES)
def test_decoys(benchmark, tmp_path, name):
    bank_csv, provider_csv = (Path(p) for p in require_dataset("default_credit"))
    protocol, opts = options(name)
    run = run_protocol_locally(
        bank_csv, [provider_csv], protocol, opts, tmp_path / "train", align="sorted", split=SPLIT,
        keep_scores=True, save_models=tmp_path / "models",
    )  # fmt: skip
    ids = run.parties["bank"].test_ids
    latencies: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rows: dict[str, float] = {"no_decoys": 1.0}

    def one_block(variant: str, block: list[str], round_no: int) -> None:
        """Start the variant's service (CrypTen allows one per process), warm it up, time ``block``."""
        work = tmp_path / f"{variant}-{round_no}"
        work.mkdir()
        service = LocalService(tmp_path / "models", bank_csv, provider_csv, work, decoys=VARIANTS[variant])
        try:
            for i in ids[-20:]:  # warm-up on other applicants
                (r,) = service.bank.score(i)
                assert r.error is None, r.error
            for i in block:
                t0 = time.perf_counter()
                (r,) = service.bank.score(i)
                latencies[variant].append(time.perf_counter() - t0)
                assert r.error is None, r.error
            sets = service.bank.anonymity
            if sets is not None and "anonymity_sets" not in rows:
                rows["anonymity_sets"] = float(np.mean([len(sets.query([i])) for i in ids[:N_QUERIES]]))
        finally:
            service.stop()

    def alternate() -> None:
        for round_no, start in enumerate(range(0, N_QUERIES, BLOCK)):
            order = list(VARIANTS) if round_no % 2 == 0 else list(VARIANTS)[::-1]
            for variant in order:
                one_block(variant, ids[start : start + BLOCK], round_no)

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    p50 = {v: float(np.percentile(np.array(lat) * 1e3, 50)) for v, lat in latencies.items()}
    p99 = {v: float(np.percentile(np.array(lat) * 1e3, 99)) for v, lat in latencies.items()}
    benchmark.extra_info.update(
        {
            "case": name,
            "protocol": protocol,
            "dataset": "default_credit",
            "params": run.params,
            "n_queries": N_QUERIES,
            "decoys": {v: d.k for v, d in VARIANTS.items()},
            "rows_per_query": rows,
            "p50_ms": p50,
            "p99_ms": p99,
            "p50_ratio": p50["anonymity_sets"] / p50["no_decoys"],
        }
    )
