"""Parties as real processes: failures are named within seconds, and the ledger matches the wire."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mpc_fl.runtime.local import PartyFailed, free_port, run_local
from mpc_fl.runtime.session import Federation
from mpc_fl.runtime.wire import tcp_bytes_sent


def _mpc_traffic(session):
    import torch

    from mpc_fl.crypto._crypten_compat import crypten

    peer = next(r for r in session.roles if r != session.role)
    before = tcp_bytes_sent()
    with session.channel.phase("training"):
        x = crypten.cryptensor(torch.randn(50_000), src=0)
        y = crypten.cryptensor(torch.randn(50_000), src=1)
        (x * y).sigmoid()
        session.channel.send_bytes(peer, bytes(500_000))
        session.channel.recv_bytes(peer)
        session.channel.drain()
    return {
        "wire": tcp_bytes_sent() - before,
        "ledger": session.channel.ledger.by_phase["training"].bytes_sent,
    }


def test_ledger_matches_the_bytes_on_the_wire():
    if tcp_bytes_sent() is None:
        pytest.skip("`ss` (iproute2) is not available to read TCP counters")
    results = run_local(_mpc_traffic, Federation())
    for role, r in results.items():
        wire, ledger = r["result"]["wire"], r["result"]["ledger"]
        assert ledger > 5_000_000
        # the wire also carries gloo's few framing bytes per message
        assert abs(wire - ledger) / ledger < 0.01, (role, wire, ledger)


def _provider_dies(session):
    import os

    from mpc_fl.crypto._crypten_compat import crypten

    crypten.cryptensor([1.0, 2.0], src=0).get_plain_text()
    if session.role == "provider":
        os._exit(3)  # crash without any goodbye
    import torch

    x = crypten.cryptensor(torch.ones(10), src=0)
    return (x * x).get_plain_text().tolist()


def test_a_party_that_dies_fails_the_run_quickly_and_is_named():
    start = time.monotonic()
    with pytest.raises(PartyFailed, match="provider"):
        run_local(_provider_dies, Federation(), timeout_s=120)
    assert time.monotonic() - start < 60


def test_a_party_that_never_connects_is_named_by_the_others(tmp_path):
    bank = tmp_path / "bank.csv"
    bank.write_text("id,y,a\n1,0,0.1\n2,1,0.2\n3,0,0.3\n")
    cmd = [
        sys.executable, "-m", "mpc_fl.cli", "party", "--role", "bank", "--data", str(bank),
        "--protocol", "plain_lr", "--master-port", str(free_port()), "--connect-timeout", "3",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "'provider' did not connect within 3 s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60


def test_bad_input_file_is_one_clear_line(tmp_path):
    bad = tmp_path / "bank.csv"
    bad.write_text("id,y,a\n1,0,0.1\n1,1,0.2\n")
    cmd = [sys.executable, "-m", "mpc_fl.cli", "party", "--role", "bank", "--data", str(bad)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "occur more than once" in proc.stderr and "Traceback" not in proc.stderr
