"""Parties as real processes: failures are named within seconds, and the ledger matches the wire."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mpc_fl.runtime.local import PartyFailed, run_local
from mpc_fl.runtime.wire import tcp_bytes_sent


def _mpc_traffic(session):
    import torch

    from mpc_fl.crypto.secure_crypten import crypten

    peer = next(r for r in session.roles if r != session.role)
    before = tcp_bytes_sent()
    with session.channel.phase("training"):
        x = crypten.cryptensor(torch.randn(50_000), src=0)
        y = crypten.cryptensor(torch.randn(50_000), src=1)
        (x * y).sigmoid()
        session.channel.send_bytes(peer, bytes(500_000))
        session.channel.recv_bytes(peer)
    return {
        "wire": tcp_bytes_sent() - before,
        "ledger": session.channel.ledger.by_phase["training"].bytes_sent,
    }


def test_ledger_matches_the_bytes_on_the_wire():
    if tcp_bytes_sent() is None:
        pytest.skip("`ss` (iproute2) is not available to read TCP counters")
    results = run_local(_mpc_traffic)
    for role, r in results.items():
        wire, ledger = r["result"]["wire"], r["result"]["ledger"]
        assert ledger > 5_000_000
        # the ledger books the TLS records themselves, so it should match the kernel to the byte
        assert abs(wire - ledger) / ledger < 0.01, (role, wire, ledger)


def _provider_dies(session):
    import os

    from mpc_fl.crypto.secure_crypten import crypten

    crypten.cryptensor([1.0, 2.0], src=0).get_plain_text()
    if session.role == "provider":
        os._exit(3)  # crash without any goodbye
    import torch

    x = crypten.cryptensor(torch.ones(10), src=0)
    return (x * x).get_plain_text().tolist()


def test_a_party_that_dies_fails_the_run_quickly_and_is_named():
    start = time.monotonic()
    with pytest.raises(PartyFailed, match="provider"):
        run_local(_provider_dies, timeout_s=120)
    assert time.monotonic() - start < 60


def _federation_file(tmp_path):  # noqa: ANN202
    from mpc_fl.runtime.federation import federation_text, local_federation

    fed, keys = local_federation(("bank", "provider"), tmp_path / "keys", dealer=False)
    path = tmp_path / "federation.toml"
    path.write_text(federation_text(list(fed.members)))
    return path, keys


def test_a_party_that_never_connects_is_named_by_the_others(tmp_path):
    fed_file, keys = _federation_file(tmp_path)
    bank = tmp_path / "bank.csv"
    bank.write_text("id,y,a\n1,0,0.1\n2,1,0.2\n3,0,0.3\n")
    cmd = [
        sys.executable, "-m", "mpc_fl.app.cli", "party", "--role", "bank", "--data", str(bank),
        "--federation", str(fed_file), "--key", str(keys["bank"]),
        "--protocol", "plain_lr", "--connect-timeout", "3",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "'provider' did not connect within 3 s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60


def test_bad_input_file_is_one_clear_line(tmp_path):
    fed_file, keys = _federation_file(tmp_path)
    bad = tmp_path / "bank.csv"
    bad.write_text("id,y,a\n1,0,0.1\n1,1,0.2\n")
    cmd = [
        sys.executable, "-m", "mpc_fl.app.cli", "party", "--role", "bank", "--data", str(bad),
        "--federation", str(fed_file), "--key", str(keys["bank"]),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "occur more than once" in proc.stderr and "Traceback" not in proc.stderr
