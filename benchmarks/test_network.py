"""The network model checked against runs over emulated links (round-trip time and bandwidth).

Every member delays and paces its own outgoing links in the transport
(:class:`mpc_fl.runtime.mesh.LinkEmulator`: one-way delay rtt/2 per frame, serialisation at
the bandwidth; no loss, jitter or slow start), because this kernel has no netem. Each
protocol runs once unshaped on loopback (the model's input: compute time, bytes, rounds)
and once per setting; ``experiments/fig_network.py`` puts the measured fit times beside the
model's predictions (:mod:`mpc_fl.netmodel`). Sizes are cut so that a 40 ms setting
finishes in minutes: SS-LR and Paillier LR one epoch, the tree protocols two trees.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _bench import SPLIT, family, options, record, require_dataset, suite

from mpc_fl.app.local import run_protocol_locally
from mpc_fl.netmodel import NetworkProfile, predict_from_ledgers, traffic_summary

#: the registry's network cases, cut so a 40 ms setting finishes in minutes
CUT = {"lr": {"n_epochs": 1}, "gbdt": {"n_trees": 2}}
CASES = suite("network")
#: (round-trip ms, Mbit/s); (0, 0) is the unshaped loopback run the model starts from
SETTINGS = [(0.0, 0.0), (5.0, 100.0), (20.0, 100.0), (40.0, 100.0)]


@pytest.mark.parametrize("setting", SETTINGS, ids=[f"rtt{r:g}ms_{b:g}mbit" for r, b in SETTINGS])
@pytest.mark.parametrize("case", CASES)
def test_network(benchmark, tmp_path, case, setting):
    bank, provider = require_dataset("default_credit")
    protocol, opts = options(case)
    opts = {**opts, **CUT[family(case)]}
    run = benchmark.pedantic(
        lambda: run_protocol_locally(
            Path(bank),
            [Path(provider)],
            protocol,
            opts,
            tmp_path,
            align="sorted",
            split=SPLIT,
            emulate=setting,
        ),  # fmt: skip
        rounds=1,
        iterations=1,
    )
    record(benchmark, run)
    summary = traffic_summary(run.to_dict())
    rtt, mbit = setting
    benchmark.extra_info.update(
        {
            "case": case,
            "dataset": "default_credit",
            "rtt_ms": rtt,
            "mbit": mbit,
            "fit_phases_s": summary["wall_s"],  # the larger party's setup + training time
        }
    )
    if rtt or mbit:  # what the model predicts for this run's own traffic at zero network cost
        profile = NetworkProfile("emulated", rtt_s=rtt / 1e3, bandwidth_bps=mbit * 1e6 if mbit else 1e15)
        benchmark.extra_info["model_on_own_traffic_s"] = predict_from_ledgers(
            run.to_dict(), [profile], compute_s=0.0
        )["emulated"]
