"""Tunnel: a library's TCP connections reach the peer's loopback server only through the channel."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mpc_fl.runtime.channel import TUNNEL, LocalChannel
from mpc_fl.runtime.errors import PartyConnectionError
from mpc_fl.runtime.federation import free_port
from mpc_fl.runtime.tunnel import _DATA, _FRAME, Tunnel

ROLES = ("bank", "provider")


def _echo_server() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data[::-1])

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def _close_both(a: Tunnel, b: Tunnel) -> None:
    with ThreadPoolExecutor(2) as ex:
        for f in [ex.submit(a.close), ex.submit(b.close)]:
            f.result(timeout=30)


def test_bytes_cross_only_the_channel_and_are_counted():
    chans = LocalChannel.create(ROLES)
    server, port = _echo_server()
    a = Tunnel(chans["bank"], "provider", target_port=free_port()).__enter__()
    b = Tunnel(chans["provider"], "bank", target_port=port).__enter__()
    payload = bytes(range(256)) * 4000  # ~1 MB, many frames
    with socket.create_connection(("127.0.0.1", a.port)) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        got = bytearray()
        while data := c.recv(65536):
            got += data
    _close_both(a, b)
    server.close()
    # the echo server reverses each chunk it reads; the total and the multiset survive
    assert len(got) == len(payload) and sorted(got) == sorted(payload)
    assert chans["bank"].ledger.total().bytes_sent >= len(payload)
    assert chans["provider"].ledger.total().bytes_sent >= len(payload)


def test_frame_for_an_unknown_stream_is_an_error():
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", target_port=free_port()).__enter__()
    chans["provider"].send_bytes("bank", _FRAME.pack(_DATA, 0, 41) + b"forged", stream=TUNNEL)
    chans["provider"].send_bytes("bank", _FRAME.pack(3, 0, 0), stream=TUNNEL)  # END, so close() does not wait
    with pytest.raises(ValueError, match="unknown stream 41"):
        a.close()


def test_tunnel_frames_never_reach_the_protocol_stream():
    """The library's traffic has a stream of its own: a protocol message after it is read as sent."""
    chans = LocalChannel.create(ROLES)
    server, port = _echo_server()
    a = Tunnel(chans["bank"], "provider", target_port=free_port()).__enter__()
    b = Tunnel(chans["provider"], "bank", target_port=port).__enter__()
    with socket.create_connection(("127.0.0.1", a.port)) as c:
        c.sendall(b"x" * 100_000)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    chans["provider"].send_json("bank", {"next": "phase"})  # sent while tunnel frames may still flow
    _close_both(a, b)
    server.close()
    assert chans["bank"].recv_json("provider") == {"next": "phase"}


def test_a_late_frame_of_a_finished_tunnel_is_an_error_naming_both_tunnels():
    chans = LocalChannel.create(ROLES)
    first_a = Tunnel(chans["bank"], "provider", target_port=free_port()).__enter__()
    first_b = Tunnel(chans["provider"], "bank", target_port=free_port()).__enter__()
    _close_both(first_a, first_b)
    second = Tunnel(chans["bank"], "provider", target_port=free_port()).__enter__()
    assert (first_a.number, second.number) == (0, 1)
    chans["provider"].send_bytes("bank", _FRAME.pack(_DATA, 0, 0) + b"late", stream=TUNNEL)
    with pytest.raises(ValueError, match=r"tunnel #0 into tunnel #1"):
        second.close()


def test_a_peer_that_never_ends_its_tunnel_fails_the_close(monkeypatch):
    """Mutant's view: close() used to give up waiting and carry on with a reader still running."""
    monkeypatch.setattr("mpc_fl.runtime.tunnel._CONNECT_TIMEOUT_S", 0.5)
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", target_port=free_port()).__enter__()
    with pytest.raises(PartyConnectionError, match="did not end tunnel #0"):
        a.close()


def test_tunnels_are_numbered_per_channel():
    """Both parties count the tunnels of their own channel, so a new session starts again at #0."""
    for _ in range(2):
        chans = LocalChannel.create(ROLES)
        a = Tunnel(chans["bank"], "provider", target_port=free_port())
        b = Tunnel(chans["provider"], "bank", target_port=free_port())
        assert (a.number, b.number) == (0, 0)
        a._shut_local()
        b._shut_local()
