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

CLI = [sys.executable, "-m", "mpc_fl.app.cli"]


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


def test_each_party_gives_its_own_monotone_constraints_and_the_handshake_does_not_compare_them(tmp_path):
    """Party-local: the bank's and the provider's constraints differ, and the run goes ahead; each
    party's report holds its own only."""
    bank, provider = _csvs(tmp_path)
    fed, keys = _federation(tmp_path, dealer=False)
    reports = {r: tmp_path / f"{r}.json" for r in ("bank", "provider")}
    out = _finish(
        {
            "bank": _party(
                fed,
                keys,
                "bank",
                bank,
                "plain_gbdt",
                "--param",
                "n_trees=2",
                "--param",
                "monotone=a:+1",
                "--out",
                str(reports["bank"]),
            ),
            "provider": _party(
                fed,
                keys,
                "provider",
                provider,
                "plain_gbdt",
                "--param",
                "n_trees=2",
                "--param",
                "monotone=c:-1,d:+1",
                "--out",
                str(reports["provider"]),
            ),
        }  # fmt: skip
    )
    assert all(rc == 0 for rc, _, _ in out.values()), out
    info = {r: json.loads(f.read_text())["run_info"] for r, f in reports.items()}
    assert info == {"bank": {"monotone": {"a": 1}}, "provider": {"monotone": {"c": -1, "d": 1}}}


def test_run_importance_gives_each_party_its_own_and_the_bank_the_providers_groups(tmp_path):
    bank, provider = _csvs(tmp_path)
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"activity": ["c", "d"]}))  # e: in no group, so "partner data: other"
    out = tmp_path / "runs"
    proc = subprocess.run(
        [*CLI, "run", "--bank", str(bank), "--provider", str(provider), "--protocol", "plain_gbdt", "--quiet",
         "--param", "n_trees=3", "--importance", "--release", "group", "--groups", str(groups), "--out-dir", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    parties = json.loads(next(out.glob("*/run.json")).read_text())["parties"]
    bank_view, provider_view = parties["bank"]["importance"], parties["provider"]["importance"]
    assert set(bank_view) == {"own", "provider"} and set(provider_view) == {"own"}
    assert set(bank_view["own"]["gain"]) == {"a", "b"} and set(provider_view["own"]["gain"]) == {
        "c",
        "d",
        "e",
    }
    released = bank_view["provider"]["gain"]  # the provider's groups, never its features
    assert set(released) == {"activity", "partner data: other"}
    mine = provider_view["own"]["gain"]
    assert released["activity"] == pytest.approx(mine["c"] + mine["d"])


def test_a_constraint_on_a_feature_the_party_lacks_is_one_line_before_anything_connects(tmp_path):
    _, provider = _csvs(tmp_path)
    fed, keys = _federation(tmp_path)
    start = time.monotonic()
    proc = _party(fed, keys, "provider", provider, "ss_gbdt", "--param", "monotone=a:+1")
    first = proc.stderr.readline()  # at once, before it tries to tell the (absent) others
    elapsed = time.monotonic() - start
    rc, _, rest = _finish({"p": proc})["p"]
    assert rc == 2 and elapsed < 10 and "Traceback" not in rest and not _error_lines(rest), (first, rest)
    assert first.startswith("mpc-fl provider: error:") and "'a' not among this party's features" in first
    run = subprocess.run(
        [*CLI, "run", "--bank", str(tmp_path / "bank.csv"), "--provider", str(provider), "--protocol", "plain_gbdt",
         "--param", "monotone=zz:+1", "--out-dir", str(tmp_path / "runs")],  # fmt: skip
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (
        run.returncode == 2 and "'zz' is no party's feature" in run.stderr and "Traceback" not in run.stderr
    )


def test_the_dealer_exits_non_zero_with_one_line_when_a_party_never_connects(tmp_path):
    fed, keys = _federation(tmp_path)
    start = time.monotonic()
    rc, stdout, err = _finish({"dealer": _dealer(fed, keys, "--connect-timeout", "3")})["dealer"]
    assert rc == 2 and "Traceback" not in err
    assert _error_lines(err) == [line for line in err.splitlines() if line.strip()]
    assert "'bank', 'provider' did not connect within 3 s" in err
    assert time.monotonic() - start < 3 + 10


def test_the_connect_timeout_counts_from_when_the_process_is_ready(tmp_path):
    """Imports took up to a minute on a busy machine; they no longer eat into the timeout."""
    from mpc_fl.runtime import session
    from mpc_fl.runtime.federation import load_federation

    fed, _ = _federation(tmp_path)
    loaded = load_federation(fed, connect_timeout_s=60.0)
    assert session.process_age_s() > 0  # this process has run for a while, and gets the whole timeout
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
    proc = _party(fed, keys, "bank", bad, "ss_lr")
    first = proc.stderr.readline()  # printed at once, before it tries to tell the (absent) others
    elapsed = time.monotonic() - start
    rc, _, rest = _finish({"bank": proc})["bank"]
    assert rc == 2 and first.startswith("mpc-fl bank: error:") and not rest.strip(), (first, rest)
    assert "(e.g. 87899)" in first and "np.int64" not in first
    assert elapsed < 10  # the file is read first, not after the peers connect (nobody else is running)


def test_a_bad_file_stops_every_member_naming_the_party_and_the_problem(tmp_path):
    """The three-command form: the others used to wait out their connect timeout and blame the dealer."""
    _, provider = _csvs(tmp_path)
    bad = tmp_path / "bank.csv"
    bad.write_text("ident,y,a\n1,0,0.1\n2,1,0.2\n")
    fed, keys = _federation(tmp_path)
    start = time.monotonic()
    procs = {
        "bank": _party(fed, keys, "bank", bad, "ss_lr", "--connect-timeout", "120"),
        "provider": _party(fed, keys, "provider", provider, "ss_lr", "--connect-timeout", "120"),
        "dealer": _dealer(fed, keys, "--connect-timeout", "120"),
    }
    out = _finish(procs, timeout=150)
    assert time.monotonic() - start < 60  # far from the 120 s timeout: nobody waited it out
    for name, (rc, _, err) in out.items():
        lines = _error_lines(err)
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (name, err)
        assert "no id column 'id'" in lines[0], (name, lines)
        if name != "bank":
            assert "'bank' stopped" in lines[0], (name, lines)


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


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["keygen", "--role", "bank", "--out-dir", "{tmp}"], ["protocols"], ["federation", "--help"]],
)
def test_light_commands_import_neither_torch_nor_crypten_nor_the_psi_library(tmp_path, argv):
    argv = [a.replace("{tmp}", str(tmp_path / "keys")) for a in argv]
    probe = (
        "import sys\nfrom mpc_fl.app.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'crypten', 'spu.libpsi', 'spu.libspu') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_a_run_into_a_folder_an_earlier_run_used_starts_cleanly(tmp_path):
    """`make demo` twice in a row: the second run used to stop at 'keys/bank.key exists already'."""
    from mpc_fl.app.local import run_protocol_locally
    from mpc_fl.runtime.local import PartyFailed

    bank, provider = _csvs(tmp_path)
    out = tmp_path / "run"
    first = run_protocol_locally(bank, [provider], "plain_lr", {"n_epochs": 1}, out, align="sorted")
    old_key = (out / "keys" / "bank.key").read_bytes()
    second = run_protocol_locally(bank, [provider], "plain_lr", {"n_epochs": 1}, out, align="sorted")
    assert first.status == second.status == "ok"
    assert (out / "keys" / "bank.key").read_bytes() != old_key  # the run's own fresh keys
    assert json.loads((out / "run.json").read_text())["status"] == "ok"
    bad = tmp_path / "bad.csv"
    bad.write_text("id,y,a\n1,0,0.1\n1,1,0.2\n")
    with pytest.raises(PartyFailed):
        run_protocol_locally(bad, [provider], "plain_lr", {}, out, align="sorted")
    record = json.loads((out / "run.json").read_text())  # the failure, not the earlier run's result
    assert record["status"] == "failed" and "more than once" in record["error"]
    assert not (out / "bank.json").exists()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--decoys", "0"], "--decoys-policy warn"),
        (["--http", "0.0.0.0:8080", "--http-no-auth"], "without authentication"),
        (["--http", "0.0.0.0:8080"], "in clear"),
        (["--http", "somewhere"], "give [HOST]:PORT"),
        (["--decoys", "-1"], "0 or more"),
    ],
)
def test_unsafe_or_bad_serve_options_are_one_line_before_anything_is_read(tmp_path, extra, says):
    fed, keys = _federation(tmp_path)
    cmd = [*CLI, "serve", "--role", "bank", "--federation", str(fed), "--key", str(keys["bank"]),
           "--model", str(tmp_path / "absent.npz"), "--features", str(tmp_path / "absent.csv"), *extra]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    lines = _error_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stderr
