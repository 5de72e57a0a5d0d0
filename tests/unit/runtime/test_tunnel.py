"""Tunnel: a library's connections reach the peer's library only through the channel, and only
the library itself may use the local end.

Here the test process plays both parties' libraries (it is admitted as the library); other
local processes are forked children. tests/integration/test_psi_local_link.py attacks the real
library's link.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mpc_fl.runtime.channel import TUNNEL, LocalChannel
from mpc_fl.runtime.errors import PartyConnectionError
from mpc_fl.runtime.tunnel import _DATA, _FRAME, Tunnel, TunnelIntrusionError

ROLES = ("bank", "provider")


@pytest.fixture
def dirs() -> Iterator[dict[str, Path]]:
    """One private (0700) directory per party, with paths short enough for Unix sockets."""
    with tempfile.TemporaryDirectory(prefix="tunnel-", dir="/tmp") as tmp:
        out = {}
        for role in ROLES:
            out[role] = Path(tmp) / role
            out[role].mkdir(mode=0o700)
        yield out


def _echo_server(path: Path) -> socket.socket:
    """A stand-in library server at ``path``: reverses each chunk it reads."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

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
    return server


def _pair(dirs: dict[str, Path], connections: int = 1) -> tuple[Tunnel, Tunnel, socket.socket]:
    """Both parties' tunnels, the provider's library served by an echo server, both admitted."""
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"], connections=connections).__enter__()
    b = Tunnel(chans["provider"], "bank", dirs["provider"], connections=connections).__enter__()
    server = _echo_server(b.target)
    a.admit(os.getpid())
    b.admit(os.getpid())
    return a, b, server


def _roundtrip(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(str(path))
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        got = bytearray()
        while data := c.recv(65536):
            got += data
    return bytes(got)


def _close_both(a: Tunnel, b: Tunnel) -> None:
    with ThreadPoolExecutor(2) as ex:
        for f in [ex.submit(a.close), ex.submit(b.close)]:
            f.result(timeout=30)


def _wait_failed(t: Tunnel, timeout_s: float = 10) -> BaseException | None:
    end = time.monotonic() + timeout_s
    while t.failed is None and time.monotonic() < end:
        time.sleep(0.01)
    return t.failed


def _child_connecting(path: Path) -> tuple[int, int]:
    """Fork a local process (same user) that connects to ``path`` and holds the connection.

    Returns its pid and a pipe end: write a byte to let it send ``b"forged"`` and leave.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(w)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
                os.read(r, 1)
                s.sendall(b"forged")
                s.shutdown(socket.SHUT_WR)
                s.recv(100)
            code = 0
        finally:
            os._exit(code)
    os.close(r)
    return pid, w


def _reap(pid: int, w: int) -> None:
    try:
        os.write(w, b"x")
    except OSError:
        pass
    os.close(w)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def test_bytes_cross_only_the_channel_and_are_counted(dirs):
    a, b, server = _pair(dirs)
    payload = bytes(range(256)) * 4000  # ~1 MB, many frames
    got = _roundtrip(a.path, payload)
    _close_both(a, b)
    server.close()
    # the echo server reverses each chunk it reads; the total and the multiset survive
    assert len(got) == len(payload) and sorted(got) == sorted(payload)
    assert a.channel.ledger.total().bytes_sent >= len(payload)
    assert b.channel.ledger.total().bytes_sent >= len(payload)


def test_the_sockets_are_gone_once_the_library_has_its_connections(dirs):
    """Exactly ``connections`` connections each way; then neither path can be connected to."""
    a, b, server = _pair(dirs)
    assert _roundtrip(a.path, b"abc") == b"cba"
    assert not a.path.exists() and not b.target.exists()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c, pytest.raises(FileNotFoundError):
        c.connect(str(a.path))
    _close_both(a, b)
    server.close()


def test_a_directory_other_users_can_enter_is_refused(dirs):
    dirs["bank"].chmod(0o755)
    with pytest.raises(PermissionError, match="mode 0700"):
        Tunnel(LocalChannel.create(ROLES)["bank"], "provider", dirs["bank"])


def test_another_local_process_in_the_tunnel_stops_the_run_naming_it(dirs):
    """A same-user process that is not the library connects first: named, and nothing forwarded."""
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"], label="PSI tunnel").__enter__()
    pid, w = _child_connecting(a.path)
    try:
        a.admit(os.getpid())  # the library is this process, not the child
        err = _wait_failed(a)
    finally:
        _reap(pid, w)
    assert isinstance(err, TunnelIntrusionError)
    assert str(err) == (
        f"bank: an unexpected local process (pid {pid}, uid {os.geteuid()}) connected to PSI tunnel #0 "
        f"with 'provider'; the run stops"
    )
    assert chans["bank"].ledger.total().bytes_sent == 0  # not even the OPEN went out
    a.__exit__(TunnelIntrusionError, None, None)


def test_positive_control_the_same_process_admitted_is_forwarded(dirs):
    """The check is what stopped it: the same child, admitted as the library, gets through."""
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"], label="PSI tunnel").__enter__()
    b = Tunnel(chans["provider"], "bank", dirs["provider"]).__enter__()
    server = _echo_server(b.target)
    b.admit(os.getpid())
    pid, w = _child_connecting(a.path)
    a.admit(pid)
    _reap(pid, w)  # it sent its bytes and read the echo
    _close_both(a, b)
    server.close()
    assert a.failed is None
    assert chans["bank"].ledger.total().bytes_sent >= len(b"forged")


def test_a_connection_beyond_the_expected_ones_is_named(dirs):
    """Two connections queued while the library may have one: the second is refused, by name."""
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"]).__enter__()
    socks = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    for s in socks:
        s.connect(str(a.path))
    a.admit(os.getpid())
    err = _wait_failed(a)
    assert isinstance(err, PartyConnectionError)
    assert "the library opened more than 1 connection(s) to tunnel #0 with 'provider'" in str(err)
    a.__exit__(PartyConnectionError, None, None)
    for s in socks:
        s.close()


def test_a_server_that_is_not_the_library_is_named(dirs):
    """Something else serves at the library's path: the tunnel does not hand it the peer's stream."""
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"], label="PSI tunnel").__enter__()
    server = _echo_server(a.target)  # served by this process...
    a.admit(os.getpid() + 1_000_000)  # ...while the library is another one
    err = _wait_failed(a)
    server.close()
    assert isinstance(err, TunnelIntrusionError)
    assert f"(pid {os.getpid()}, uid {os.geteuid()}) serves the library's socket of PSI tunnel #0" in str(err)
    a.__exit__(TunnelIntrusionError, None, None)


def test_a_connection_into_the_library_before_the_partys_is_named(dirs):
    """The library's server cannot check who connects; an extra connection found there is named."""
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"], label="PSI tunnel").__enter__()
    server = _echo_server(a.target)
    early = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    early.connect(str(a.target))  # an intruder, before the party dials
    a.admit(os.getpid())
    err = _wait_failed(a)
    early.close()
    server.close()
    assert isinstance(err, TunnelIntrusionError)
    assert "1 unexpected local connection(s) reached the library's socket of PSI tunnel #0" in str(err)
    a.__exit__(TunnelIntrusionError, None, None)


def test_positive_control_no_early_connection_no_error(dirs):
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"]).__enter__()
    server = _echo_server(a.target)
    a.admit(os.getpid())
    end = time.monotonic() + 10
    while a.target.exists() and time.monotonic() < end:
        time.sleep(0.01)
    assert not a.target.exists() and a.failed is None  # dialled, unlinked, nothing else found
    server.close()
    a.__exit__(RuntimeError, None, None)


def test_a_stream_opened_after_the_library_stopped_is_refused_at_once(dirs):
    """It used to wait 60 s for a server that was gone, then fail saying nothing served there."""
    a, b, server = _pair(dirs)
    server.close()
    b.library_stopped()
    start = time.monotonic()
    got = _roundtrip(a.path, b"late")  # the refusal cuts this connection: it reads EOF
    elapsed = time.monotonic() - start
    _close_both(a, b)  # and neither side fails for it
    assert got == b"" and elapsed < 5
    assert a.refusals == [
        "bank: the library of 'provider' had stopped when this party's library opened stream 0 on "
        "tunnel #0; the stream was refused"
    ]


def test_positive_control_without_the_stop_the_stream_waits_for_the_library(dirs, monkeypatch):
    """The measurement can fail: the same stream, the stop not signalled, waits out the timeout."""
    monkeypatch.setattr("mpc_fl.runtime.tunnel._CONNECT_TIMEOUT_S", 2.0)
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"]).__enter__()
    b = Tunnel(chans["provider"], "bank", dirs["provider"]).__enter__()
    a.admit(os.getpid())
    b.admit(os.getpid())  # no server ever binds; library_stopped() is never called
    start = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(str(a.path))
        err = _wait_failed(b)
    assert time.monotonic() - start >= 2.0
    assert "this party's library did not serve tunnel #0 with 'bank' within 2 s" in str(err)
    for t in (a, b):
        t.__exit__(RuntimeError, None, None)


def test_frame_for_an_unknown_stream_is_an_error(dirs):
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"]).__enter__()
    chans["provider"].send_bytes("bank", _FRAME.pack(_DATA, 0, 41) + b"forged", stream=TUNNEL)
    chans["provider"].send_bytes("bank", _FRAME.pack(3, 0, 0), stream=TUNNEL)  # END, so close() does not wait
    with pytest.raises(ValueError, match="unknown stream 41"):
        a.close()


def test_tunnel_frames_never_reach_the_protocol_stream(dirs):
    """The library's traffic has a stream of its own: a protocol message after it is read as sent."""
    a, b, server = _pair(dirs)
    _roundtrip(a.path, b"x" * 100_000)
    b.channel.send_json("bank", {"next": "phase"})  # sent while tunnel frames may still flow
    _close_both(a, b)
    server.close()
    assert a.channel.recv_json("provider") == {"next": "phase"}


def test_a_late_frame_of_a_finished_tunnel_is_an_error_naming_both_tunnels(dirs):
    chans = LocalChannel.create(ROLES)
    first_a = Tunnel(chans["bank"], "provider", dirs["bank"]).__enter__()
    first_b = Tunnel(chans["provider"], "bank", dirs["provider"]).__enter__()
    _close_both(first_a, first_b)
    second = Tunnel(chans["bank"], "provider", dirs["bank"]).__enter__()
    assert (first_a.number, second.number) == (0, 1)
    chans["provider"].send_bytes("bank", _FRAME.pack(_DATA, 0, 0) + b"late", stream=TUNNEL)
    with pytest.raises(ValueError, match=r"tunnel #0 into tunnel #1"):
        second.close()


def test_a_peer_that_never_ends_its_tunnel_fails_the_close(dirs, monkeypatch):
    """Mutant's view: close() used to give up waiting and carry on with a reader still running."""
    monkeypatch.setattr("mpc_fl.runtime.tunnel._CONNECT_TIMEOUT_S", 0.5)
    chans = LocalChannel.create(ROLES)
    a = Tunnel(chans["bank"], "provider", dirs["bank"]).__enter__()
    with pytest.raises(PartyConnectionError, match="did not end tunnel #0"):
        a.close()


def test_tunnels_are_numbered_per_channel(dirs):
    """Both parties count the tunnels of their own channel, so a new session starts again at #0."""
    for _ in range(2):
        chans = LocalChannel.create(ROLES)
        a = Tunnel(chans["bank"], "provider", dirs["bank"])
        b = Tunnel(chans["provider"], "bank", dirs["provider"])
        assert (a.number, b.number) == (0, 0)
        a._shut_local()
        b._shut_local()
