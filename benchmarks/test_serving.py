"""Latency and throughput of the scoring service, per protocol, on loopback.

Each case trains once on default_credit (the public reference split, the benchmark
hyperparameters; GBDTs with 20 trees of depth 4) and saves every party's part; then the
provider and the dealer run as service processes and the bank's service runs here, and
1,000 single applications (test-set ids, one query each) are scored one after the other:
latency is measured by the caller around each query. Bytes and rounds per query are the
bank's ledger over those queries (all traffic of a query passes the bank: the provider and
the dealer exchange nothing after set-up). Throughput: the same service answering
micro-batches of 100 applications. The predicted WAN latency adds the network model's cost
(rounds x one-way latency + bytes / bandwidth) to the measured loopback latency.

The services run without decoys (``--decoys 0 --decoys-policy warn``), so these are the
protocols' own costs; what the default anonymity sets add is measured against this in one run
by ``benchmarks/test_decoys.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from _bench import SPLIT, options, require_dataset, suite

from mpc_fl.app.local import LocalService, run_protocol_locally
from mpc_fl.app.serving import DecoySettings
from mpc_fl.netmodel import LAN, WAN, predict_time

CASES = suite("serving")
N_QUERIES = 1000
BATCH = 100
N_BATCHES = 20


def _service(tmp: Path, protocol: str, opts: dict, bank_csv: Path, provider_csv: Path):  # noqa: ANN202
    run = run_protocol_locally(
        bank_csv, [provider_csv], protocol, opts, tmp / "train", align="sorted", split=SPLIT,
        keep_scores=True, save_models=tmp / "models",
    )  # fmt: skip
    (tmp / "service").mkdir()
    no_decoys = DecoySettings(0, "warn")
    return run, LocalService(tmp / "models", bank_csv, provider_csv, tmp / "service", decoys=no_decoys)


@pytest.mark.parametrize("name", CASES)
def test_serving(benchmark, tmp_path, name):
    bank_csv, provider_csv = (Path(p) for p in require_dataset("default_credit"))
    protocol, opts = options(name)
    run, deployment = _service(tmp_path, protocol, opts, bank_csv, provider_csv)
    service = deployment.bank
    try:
        ids = run.parties["bank"].test_ids
        for i in ids[:20]:  # warm-up
            service.score(i)
        ledger = service.session.channel.ledger
        before = ledger.total()
        latencies: list[float] = []

        def single() -> None:
            for k in range(N_QUERIES):
                t0 = time.perf_counter()
                (r,) = service.score(ids[k % len(ids)])
                latencies.append(time.perf_counter() - t0)
                assert r.error is None, r.error

        benchmark.pedantic(single, rounds=1, iterations=1)
        after = ledger.total()
        sent, recv = (
            (after.bytes_sent - before.bytes_sent) / N_QUERIES,
            (after.bytes_recv - before.bytes_recv) / N_QUERIES,
        )
        per_query_rounds = (after.rounds - before.rounds) / N_QUERIES
        t0 = time.perf_counter()
        for b in range(N_BATCHES):
            out = service.score([ids[(b * BATCH + k) % len(ids)] for k in range(BATCH)])
            assert all(r.error is None for r in out)
        throughput = N_BATCHES * BATCH / (time.perf_counter() - t0)
        lat = np.array(latencies) * 1e3
        p50 = float(np.percentile(lat, 50))
        benchmark.extra_info.update(
            {
                "case": name,
                "protocol": protocol,
                "dataset": "default_credit",
                "params": run.params,
                "n_queries": N_QUERIES,
                "latency_ms": {
                    "p50": p50,
                    "p90": float(np.percentile(lat, 90)),
                    "p99": float(np.percentile(lat, 99)),
                    "max": float(lat.max()),
                },  # fmt: skip
                "bytes_per_query": sent + recv,
                "bank_bytes_sent_per_query": sent,
                "bank_bytes_recv_per_query": recv,
                "rounds_per_query": per_query_rounds,
                "throughput_per_s": throughput,
                "batch": BATCH,
                "predicted_ms": {
                    p.name: 1e3 * predict_time(p50 / 1e3, max(sent, recv), per_query_rounds, p)
                    for p in (LAN, WAN)
                },
            }
        )
    finally:
        deployment.stop()
