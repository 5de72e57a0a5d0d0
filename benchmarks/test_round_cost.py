"""The fixed cost of one communication round on loopback, layer by layer.

A round here is one exchange: both parties send a message and wait for the other's (an
opening; CrypTen's ``all_reduce`` of two parties). Measured through:

* ``tcp``: two processes and a plain TCP socket, Python ``sendall``/``recv`` only: the floor;
* ``mesh_cleartext``: our whole stack (CrypTen's communicator on the mesh, framing, reader
  threads, metering) over plain TCP (``--insecure-cleartext``, debugging only);
* ``mesh_tls``: the same over the default TLS 1.3 links.

Messages of 8 bytes (a sign-test level of one element), 8 KiB and 128 KiB (one opening of an
SS-LR batch). The per-round time times the rounds per iteration bounds what latency costs an
iteration on loopback; the network model adds the link's RTT per round.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import socket
import time
from pathlib import Path

import pytest
import torch

from mpc_fl.runtime.federation import local_federation
from mpc_fl.runtime.local import run_local

SIZES = [8, 8192, 131072]
ROUNDS = {8: 2000, 8192: 1000, 131072: 300}
WARMUP = 50


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def _tcp_peer(port: int, size: int, n: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = bytes(size)
        for _ in range(n):
            s.sendall(payload)
            _recv_exactly(s, size)


def _tcp_round_ms(size: int, n: int) -> float:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        peer = mp.get_context("fork").Process(target=_tcp_peer, args=(port, size, WARMUP + n))
        peer.start()
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            payload = bytes(size)
            for i in range(WARMUP + n):
                if i == WARMUP:
                    t0 = time.perf_counter()
                conn.sendall(payload)
                _recv_exactly(conn, size)
            elapsed = time.perf_counter() - t0
        peer.join()
    return elapsed / n * 1e3


def _mesh_round_ms(size: int, n: int, cleartext: bool, key_dir: Path) -> float:
    def job(session):  # noqa: ANN001, ANN202
        from mpc_fl.crypto.secure_crypten import crypten

        comm = crypten.communicator.get()
        x = torch.zeros(size // 8, dtype=torch.long)
        for _ in range(WARMUP):
            comm.all_reduce([x], batched=True)
        t0 = time.perf_counter()
        for _ in range(n):
            comm.all_reduce([x], batched=True)
        return (time.perf_counter() - t0) / n * 1e3

    fed, keys = local_federation(("bank", "provider"), key_dir)
    fed = dataclasses.replace(fed, insecure_cleartext=cleartext)
    out = run_local(job, federation=(fed, keys), timeout_s=600)
    return max(r["result"] for r in out.values())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("layer", ["tcp", "mesh_cleartext", "mesh_tls"])
def test_round_cost(benchmark, tmp_path, layer, size):
    n = ROUNDS[size]
    if layer == "tcp":
        fn = lambda: _tcp_round_ms(size, n)  # noqa: E731
    else:
        fn = lambda: _mesh_round_ms(size, n, layer == "mesh_cleartext", tmp_path)  # noqa: E731
    ms = benchmark.pedantic(fn, rounds=1, iterations=1)
    assert ms > 0
    benchmark.extra_info.update(
        {
            "case": f"round_{layer}_{size}",
            "layer": layer,
            "message_bytes": size,
            "rounds": n,
            "ms_per_round": ms,
        }
    )


@pytest.mark.smoke
def test_round_cost_smoke(tmp_path):
    assert _tcp_round_ms(8, 20) > 0
    assert _mesh_round_ms(8, 20, False, tmp_path) > 0
