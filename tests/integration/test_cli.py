"""What a new user meets at the command line: a handshake before any compute, one-line failures that
name the party and the link, non-zero exits everywhere, progress, and a complete result line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mpc_fl.runtime.federation import federation_text, local_federation

CLI = [sys.executable, "-m", "mpc_fl.cli"]


def _csvs(tmp_path: Path, n: int = 600, provider_ids: np.ndarray | None = None) -> tuple[Path, Path]:
    gen = np.random.default_rng(5)
    ids = np.arange(1000, 1000 + n)
    xb, xp = gen.normal(size=(n, 2)), gen.normal(size=(n, 3))
    y = ((xb[:, 0] + xp[:, 0] + gen.normal(size=n)) > 0.5).astype(int)
    bank, provider = tmp_path / "bank.csv", tmp_path / "provider.csv"
    bank.write_text(
        "id,y,a,b\n" + "".join(f"{i},{t},{u:.4f},{v:.4f}\n" for i, t, (u, v) in zip(ids, y, xb, strict=True))
    )
    pids = ids if provider_ids is None else provider_ids
    provider.write_text(
        "id,c,d,e\n"
        + "".join(f"{i},{u:.4f},{v:.4f},{w:.4f}\n" for i, (u, v, w) in zip(pids, xp, strict=True))
    )
    return bank, provider


def _federation(tmp_path: Path, dealer: bool = True) -> tuple[Path, dict[str, Path]]:
    fed, keys = local_federation(("bank", "provider"), tmp_path / "keys", dealer=dealer)
    path = tmp_path / "federation.toml"
    path.write_text(federation_text(list(fed.members)))
    return path, keys


def _party(fed: Path, keys: dict, role: str, data: Path, protocol: str, *extra: str) -> subprocess.Popen:
    cmd = [*CLI, "party", "--federation", str(fed), "--key", str(keys[role]), "--role", role,
           "--data", str(data), "--protocol", protocol, "--connect-timeout", "20", *extra]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _dealer(fed: Path, keys: dict, *extra: str) -> subprocess.Popen:
    cmd = [
        *CLI,
        "dealer",
        "--federation",
        str(fed),
        "--key",
        str(keys["dealer"]),
        "--connect-timeout",
        "20",
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: dict[str, subprocess.Popen], timeout: float = 120) -> dict[str, tuple[int, str, str]]:
    return {name: (p.wait(timeout), *p.communicate()) for name, p in procs.items()}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mpc-fl ")]


@pytest.mark.parametrize(
    ("bank_protocol", "provider_protocol", "dealer"),
    [("ss_lr", "plain_lr", True), ("ss_lr", "ss_gbdt", True), ("paillier_lr", "secureboost", False)],
)
def test_parties_started_with_different_protocols_all_fail_within_seconds(
    tmp_path, bank_protocol, provider_protocol, dealer
):
    bank, provider = _csvs(tmp_path)
    fed, keys = _federation(tmp_path, dealer=dealer)
    start = time.monotonic()
    procs = {
        "bank": _party(fed, keys, "bank", bank, bank_protocol),
        "provider": _party(fed, keys, "provider", provider, provider_protocol),
    }
    if dealer:
        procs["dealer"] = _dealer(fed, keys)
    out = _finish(procs)
    assert time.monotonic() - start < 30
    want = f"has {bank_protocol!r}"
    for name, (rc, _, err) in out.items():
        assert rc == 2, (name, err)
        assert "Traceback" not in err
        lines = _error_lines(err)
        assert len(lines) == 1, (name, err)
        assert "protocol" in lines[0] and want in lines[0] or "stopped" in lines[0], (name, lines)
    for name in ("bank", "provider"):
        line = _error_lines(out[name][2])[0]
        assert f"bank has {bank_protocol!r}" in line and f"provider has {provider_protocol!r}" in line, line


def test_a_different_hyperparameter_is_named_with_both_values(tmp_path):
    bank, provider = _csvs(tmp_path)
    fed, keys = _federation(tmp_path)
    out = _finish(
        {
            "bank": _party(fed, keys, "bank", bank, "ss_gbdt", "--param", "n_trees=3"),
            "provider": _party(fed, keys, "provider", provider, "ss_gbdt", "--param", "n_trees=4"),
            "dealer": _dealer(fed, keys),
        }
    )
    line = _error_lines(out["bank"][2])[0]
    assert "params.n_trees" in line and "bank has 3" in line and "provider has 4" in line
    assert all(rc == 2 for rc, _, _ in out.values())


def test_the_dealer_exits_non_zero_with_one_line_when_a_party_never_connects(tmp_path):
    fed, keys = _federation(tmp_path)
    start = time.monotonic()
    rc, stdout, err = _finish({"dealer": _dealer(fed, keys, "--connect-timeout", "3")})["dealer"]
    assert rc == 2 and "Traceback" not in err
    assert _error_lines(err) == [line for line in err.splitlines() if line.strip()]
    assert "'bank', 'provider' did not connect within 3 s" in err
    assert time.monotonic() - start < 3 + 10


def test_the_connect_timeout_counts_from_process_start(tmp_path, monkeypatch):
    from mpc_fl.runtime import session
    from mpc_fl.runtime.federation import load_federation

    fed, _ = _federation(tmp_path)
    loaded = load_federation(fed, connect_timeout_s=60.0)
    monkeypatch.setattr(session, "_first_join", True)  # as in a fresh party process
    age = session.process_age_s()
    assert age > 0  # this test process has run for a while: its deadline is already partly spent
    assert session.connect_deadline(loaded) == pytest.approx(time.monotonic() - age + 60.0, abs=0.5)
    # a service that joins again after a failure gets the whole timeout from that moment
    assert session.connect_deadline(loaded) == pytest.approx(time.monotonic() + 60.0, abs=0.5)


def test_align_sorted_with_different_ids_is_one_clear_line(tmp_path):
    bank, provider = _csvs(tmp_path, provider_ids=np.arange(5000, 5600))
    fed, keys = _federation(tmp_path, dealer=False)
    out = _finish(
        {
            "bank": _party(fed, keys, "bank", bank, "plain_lr", "--align", "sorted"),
            "provider": _party(fed, keys, "provider", provider, "plain_lr", "--align", "sorted"),
        }
    )
    for rc, _, err in out.values():
        assert rc == 2 and "Traceback" not in err, err
        assert len(_error_lines(err)) == 1
    assert "identical id lists" in out["bank"][2]


def test_a_killed_provider_is_named_by_the_bank_and_the_dealer_stops_too(tmp_path):
    bank, provider = _csvs(tmp_path, n=6000)
    fed, keys = _federation(tmp_path)
    many = ["--param", "n_epochs=40", "--param", "batch_size=64"]  # long enough to be killed mid-run
    procs = {
        "bank": _party(fed, keys, "bank", bank, "ss_lr", *many),
        "provider": _party(fed, keys, "provider", provider, "ss_lr", *many),
        "dealer": _dealer(fed, keys),
    }
    for line in procs["provider"].stderr:  # wait until training runs
        if "training: iteration" in line:
            break
    procs["provider"].kill()
    out = _finish({k: v for k, v in procs.items() if k != "provider"})
    bank_lines = _error_lines(out["bank"][2])
    assert out["bank"][0] == 2 and len(bank_lines) == 1
    assert "'provider' dropped out" in bank_lines[0] and "provider -> bank" in bank_lines[0]
    assert out["dealer"][0] == 2 and len(_error_lines(out["dealer"][2])) == 1


def test_bad_input_is_one_line_before_anything_connects(tmp_path):
    bad = tmp_path / "bank.csv"
    bad.write_text("id,y,a\n87899,0,0.1\n87899,1,0.2\n3,0,0.3\n")
    fed, keys = _federation(tmp_path)
    start = time.monotonic()
    rc, _, err = _finish({"bank": _party(fed, keys, "bank", bad, "ss_lr")})["bank"]
    elapsed = time.monotonic() - start
    assert rc == 2 and err.strip().count("\n") == 0, err
    assert "(e.g. 87899)" in err and "np.int64" not in err
    assert elapsed < 10  # the file is read first, not after the peers connect (nobody else is running)


def test_run_reports_a_failure_once_and_records_it(tmp_path):
    _, provider = _csvs(tmp_path)
    bad = tmp_path / "bad_bank.csv"
    bad.write_text("id,y,a\n1,0,0.1\n1,1,0.2\n")
    proc = subprocess.run(
        [*CLI, "run", "--bank", str(bad), "--provider", str(provider), "--protocol", "plain_lr",
         "--out-dir", str(tmp_path / "runs")],  # fmt: skip
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("occur more than once") == 1 and len(_error_lines(proc.stderr)) == 1
    (run_json,) = (tmp_path / "runs").glob("*/run.json")
    record = json.loads(run_json.read_text())
    assert record["status"] == "failed" and "occur more than once" in record["error"]


def test_run_shows_progress_and_a_complete_result_line(tmp_path):
    bank, provider = _csvs(tmp_path, n=3000)
    cmd = [*CLI, "run", "--bank", str(bank), "--provider", str(provider), "--protocol", "ss_lr",
           "--param", "n_epochs=4", "--param", "batch_size=128", "--out-dir", str(tmp_path / "runs")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[bank] training: iteration" in proc.stderr and "MB sent" in proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    for part in ("AUC", "3,000 customers aligned", "bank dropped 0 of 3,000", "wall", "MB sent", "rounds"):
        assert part in line, line
    record = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
    assert record["status"] == "ok" and record["dealer"].startswith("separate dealer")
    quiet = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "training: iteration" not in quiet.stderr


def test_run_warns_when_alignment_drops_most_rows(tmp_path):
    bank, provider = _csvs(tmp_path, n=1000, provider_ids=np.r_[np.arange(1000, 1300), np.arange(9000, 9700)])
    proc = subprocess.run(
        [*CLI, "run", "--bank", str(bank), "--provider", str(provider), "--protocol", "plain_lr", "--quiet",
         "--out-dir", str(tmp_path / "runs")],  # fmt: skip
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "300 customers aligned" in proc.stdout
    assert "warning: alignment dropped 70% of bank's rows" in proc.stderr
    assert "warning: alignment dropped 70% of provider's rows" in proc.stderr
    record = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
    assert record["dealer"] == "none"  # plaintext needs no dealer, and the record says so


def test_protocols_lists_every_parameter_and_param_rejects_unknown_keys(tmp_path):
    from mpc_fl.protocols import REGISTRY, parameters

    listing = subprocess.run([*CLI, "protocols"], capture_output=True, text=True, timeout=60).stdout
    for name in REGISTRY:
        assert f"{name}: " in listing
        for key, _, _ in parameters(name):
            assert key in listing
    bank, provider = _csvs(tmp_path)
    proc = subprocess.run(
        [*CLI, "run", "--bank", str(bank), "--provider", str(provider), "--protocol", "ss_gbdt",
         "--param", "n_tree=3", "--out-dir", str(tmp_path / "runs")],  # fmt: skip
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "ss_gbdt has no parameter 'n_tree'" in proc.stderr and "n_trees" in proc.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything started
