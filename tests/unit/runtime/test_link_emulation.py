"""The transport's network emulation delays each frame by half the RTT and paces it at the bandwidth."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import pytest
import torch

from mpc_fl.runtime.errors import ProtocolMismatchError
from mpc_fl.runtime.federation import Federation, FederationError, local_federation
from mpc_fl.runtime.local import run_local
from mpc_fl.runtime.mesh import LinkEmulator
from mpc_fl.runtime.session import base_hello, check_handshake


def _arrivals(emulator: LinkEmulator, reader: socket.socket, sizes: list[int]) -> tuple[list[float], bytes]:
    """Send one message per size at once; return when each one arrived (seconds after the first send)."""
    got, times = bytearray(), []
    t0 = time.monotonic()

    def read() -> None:
        need = sum(sizes)
        ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
        while len(got) < need:
            got.extend(reader.recv(1 << 20))
            while ends and len(got) >= ends[0]:
                times.append(time.monotonic() - t0)
                ends.pop(0)

    t = threading.Thread(target=read)
    t.start()
    for i, n in enumerate(sizes):
        emulator.sendall(bytes([i % 251]) * n)
    t.join(10)
    return times, bytes(got)


def test_a_small_frame_arrives_half_an_rtt_later():
    a, b = socket.socketpair()
    with a, b:
        emulator = LinkEmulator(a, rtt_ms=40.0, mbit=0.0)
        times, _ = _arrivals(emulator, b, [100])
        emulator.drain(1.0)
    assert 0.019 <= times[0] < 0.1, times  # never early; late only by scheduling noise


def test_frames_are_paced_at_the_bandwidth_and_keep_their_order():
    a, b = socket.socketpair()
    with a, b:
        emulator = LinkEmulator(a, rtt_ms=2.0, mbit=80.0)  # 10 MB/s: 100 KB take 10 ms
        sizes = [100_000] * 5
        times, data = _arrivals(emulator, b, sizes)
        emulator.drain(1.0)
    # the k-th message leaves after k * 10 ms of serialisation, plus 1 ms one way
    for k, t in enumerate(times, start=1):
        assert 0.010 * k + 0.001 - 0.002 <= t < 0.010 * k + 0.05, (k, times)
    assert data == b"".join(bytes([i]) * n for i, n in enumerate(sizes))


def test_negative_settings_are_refused(tmp_path):
    fed, _ = local_federation(("bank", "provider"), tmp_path)
    with pytest.raises(FederationError):
        replace(fed, emulated_rtt_ms=-1.0)


def test_members_that_emulate_different_links_fail_the_handshake(tmp_path):
    fed, _ = local_federation(("bank", "provider"), tmp_path)
    shaped: Federation = replace(fed, emulated_rtt_ms=20.0)
    with pytest.raises(ProtocolMismatchError, match="emulated_network"):
        check_handshake("bank", base_hello(shaped), {"provider": base_hello(fed)})


def _rounds(session) -> float:  # noqa: ANN001
    from mpc_fl.crypto.secure_crypten import crypten

    comm = crypten.communicator.get()
    x = torch.ones(4, dtype=torch.long)
    comm.all_reduce([x], batched=True)  # warm up
    t0 = time.monotonic()
    for _ in range(10):
        (x,) = comm.all_reduce([x], batched=True)
    assert int(x[0]) == 2**10  # the values arrive intact
    return time.monotonic() - t0


def test_a_whole_run_pays_one_one_way_delay_per_opening(tmp_path):
    fed, keys = local_federation(("bank", "provider"), tmp_path)
    out = run_local(_rounds, federation=(replace(fed, emulated_rtt_ms=20.0), keys), timeout_s=120)
    for r in out.values():
        assert 0.095 <= r["result"] < 0.5, r["result"]  # 10 openings x 10 ms one way, never less
