"""Benchmark harness: every protocol through the real party processes, results with provenance.

``make bench`` runs everything (minutes to an hour) and writes JSON under
``benchmarks/results/``; CI runs only the tests marked ``smoke`` with
``--benchmark-disable`` (each executes once, as a test).
"""

from __future__ import annotations

from mpc_fl.runtime.provenance import provenance


def pytest_benchmark_update_machine_info(config, machine_info):  # noqa: ANN001, ANN201
    machine_info["mpc_fl"] = provenance()


def pytest_collection_modifyitems(config, items):  # noqa: ANN001, ANN201
    """Benchmarks run whole protocols: allow them up to two hours (tests keep the 10-minute limit)."""
    import pytest

    for item in items:
        item.add_marker(pytest.mark.timeout(7200))
