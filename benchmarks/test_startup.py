"""Start-up as a new user meets it: the light commands, each process's start to ready-to-connect,
and how long every process takes to stop when one party's file is bad.

Light commands (`--help`, `keygen`, `federation`, `protocols`) must not import torch, CrypTen or
the PSI library (`tests/integration/test_cli.py` checks that); here their wall time is recorded.
``party`` and ``dealer`` log ``ready to connect after X s``: the connect timeout counts from there.

``pytest benchmarks/test_startup.py --benchmark-json=benchmarks/results/startup.json``
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpc_fl.app.local import run_protocol_locally
from mpc_fl.runtime.federation import federation_text, local_federation

CLI = [sys.executable, "-m", "mpc_fl.app.cli"]
REPEATS = 5
_READY = re.compile(r"ready to connect after ([0-9.]+) s")


def _wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, timeout=120)
    return time.perf_counter() - t0


@pytest.mark.parametrize(
    "command",
    [["--help"], ["keygen", "--help"], ["federation", "--help"], ["protocols"], ["keygen", "--role", "bank"]],
)
def test_light_command_start(benchmark, tmp_path, command):
    if command[0] == "keygen" and len(command) > 2:
        command = [*command, "--out-dir"]
        times = [_wall([*CLI, *command, str(tmp_path / f"k{i}")]) for i in range(REPEATS)]
    else:
        times = [_wall([*CLI, *command]) for _ in range(REPEATS)]
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {"command": " ".join(command), "median_s": statistics.median(times), "times_s": times,
         "load_avg": os.getloadavg()[0]}
    )  # fmt: skip


@pytest.fixture(scope="module")
def sme_files(tmp_path_factory) -> tuple[Path, Path]:
    from mpc_fl.data.synthetic_sme import SMEScenario, write_sme_csvs

    out = tmp_path_factory.mktemp("sme")
    return write_sme_csvs(out, SMEScenario(n_bank=2000, overlap=0.6, n_platform_only=500, seed=7))


def test_party_and_dealer_start_to_ready(benchmark, tmp_path, sme_files):
    ready: dict[str, list[float]] = {}
    for i in range(REPEATS):
        out = tmp_path / f"run{i}"
        run_protocol_locally(sme_files[0], [sme_files[1]], "ss_lr", {"n_epochs": 1}, out, align="psi")
        for log in (out / "logs").glob("*.detail.log"):
            m = _READY.search(log.read_text())
            ready.setdefault(log.name.split(".")[0], []).append(float(m.group(1)))
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {"ready_s": ready, "median_ready_s": {k: statistics.median(v) for k, v in ready.items()},
         "load_avg": os.getloadavg()[0]}
    )  # fmt: skip
    assert set(ready) == {"bank", "provider", "dealer"}


def test_a_bad_file_stops_every_process(benchmark, tmp_path, sme_files):
    """Three-command form, bank file without its id column: seconds until every process has ended."""
    bad = tmp_path / "bank.csv"
    bad.write_text(Path(sme_files[0]).read_text().replace("id,", "ident,", 1))
    ends: dict[str, list[float]] = {}
    for i in range(REPEATS):
        fed, keys = local_federation(("bank", "provider"), tmp_path / f"keys{i}", dealer=True)
        fed_file = tmp_path / f"fed{i}.toml"
        fed_file.write_text(federation_text(list(fed.members)))
        common = ["--federation", str(fed_file), "--connect-timeout", "120"]
        cmds = {
            "bank": [*CLI, "party", "--role", "bank", "--key", str(keys["bank"]), "--data", str(bad), *common],
            "provider": [*CLI, "party", "--role", "provider", "--key", str(keys["provider"]),
                         "--data", str(sme_files[1]), *common],
            "dealer": [*CLI, "dealer", "--key", str(keys["dealer"]), *common],
        }  # fmt: skip
        t0 = time.perf_counter()
        procs = {
            r: subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for r, c in cmds.items()
        }
        pending = dict(procs)
        while pending and time.perf_counter() - t0 < 150:
            for role, p in list(pending.items()):
                if p.poll() is not None:
                    assert p.returncode == 2, role
                    ends.setdefault(role, []).append(time.perf_counter() - t0)
                    del pending[role]
            time.sleep(0.05)
        assert not pending, f"still running after 150 s: {sorted(pending)}"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {"ended_after_s": ends, "max_s": max(max(v) for v in ends.values()), "load_avg": os.getloadavg()[0]}
    )
