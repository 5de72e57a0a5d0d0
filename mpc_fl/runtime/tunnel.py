"""Carry a library's own TCP connections over a :class:`~mpc_fl.runtime.channel.Channel`.

Why: a native library (SecretFlow's PSI, over brpc) insists on opening its own sockets. Left
alone, its bytes would bypass the parties' TLS links, their key-based identities, the ledger
and the link emulation. A :class:`Tunnel` gives the library a loopback address that stands for
the peer: every connection the library opens to it is forwarded, frame by frame, over the
channel to the peer's tunnel, which connects to the peer library's loopback server. So the
library talks to the peer only through the authenticated, encrypted, counted channel.

Both parties run the same code. Frames are ``kind (1 byte) | tunnel (4 bytes) | stream id
(4 bytes) | payload``; stream ids opened by the party whose role sorts first are even, the
other's odd. Frames travel on the channel's own tunnel stream (:data:`~mpc_fl.runtime.channel.TUNNEL`),
never on the protocols' stream, so a library's late frame cannot be read by the next phase.
Tunnels to a peer are numbered in the order both parties open them, and every frame carries
its tunnel's number: a frame of another (finished) tunnel is an error naming both. Closing is
a handshake: each side sends END after its library returned and waits for the peer's END;
a tunnel that does not end that way fails the run rather than leave a reader behind.

What is listened on: one loopback port per tunnel (for the local library's client side); the
library's own server also listens on loopback only. Loopback is reachable by other local users
of the same machine, as any local server is; run parties on machines you control.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from functools import partial

from mpc_fl.runtime.channel import TUNNEL, Channel
from mpc_fl.runtime.errors import PartyConnectionError

__all__ = ["Tunnel"]

_OPEN, _DATA, _EOF, _END = range(4)
_FRAME = struct.Struct("<BII")
_READ = 1 << 16
_CONNECT_TIMEOUT_S = 60.0


class Tunnel:
    """Forward TCP connections between two parties' loopback ports over ``channel``.

    ``target_port``: where this party's library serves (peer-opened streams connect there).
    :attr:`port`: where this party's library should connect to reach the peer.
    """

    def __init__(self, channel: Channel, peer: str, target_port: int):
        self.channel = channel
        self.peer = peer
        self.target_port = target_port
        self.number = channel.next_tunnel_number(peer)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._socks: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._next_sid = 0 if channel.role < peer else 1
        self._error: BaseException | None = None
        self._closing = False
        self._threads = [
            threading.Thread(target=self._guard, args=(self._accept_loop,), daemon=True),
            threading.Thread(target=self._guard, args=(self._send_loop,), daemon=True),
            threading.Thread(target=self._guard, args=(self._recv_loop,), daemon=True),
        ]

    def __enter__(self) -> Tunnel:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the run is failing already: do not wait for the peer's END
            self._closing = True
            self._shut_local()

    # ------------------------------------------------------------------ threads
    def _guard(self, loop) -> None:
        try:
            loop()
        except BaseException as err:  # surfaced by close()
            if not self._closing and self._error is None:
                self._error = err
            self._outbox.put(None)

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            with self._lock:
                sid = self._next_sid
                self._next_sid += 2
                self._socks[sid] = sock
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._outbox.put(self._frame(_OPEN, sid))
            threading.Thread(target=self._guard, args=(partial(self._pump, sid, sock),), daemon=True).start()

    def _pump(self, sid: int, sock: socket.socket) -> None:
        """Local socket -> frames for the peer, until the local side shuts its writing half."""
        while True:
            try:
                data = sock.recv(_READ)
            except OSError:
                data = b""
            if not data:
                self._outbox.put(self._frame(_EOF, sid))
                return
            self._outbox.put(self._frame(_DATA, sid) + data)

    def _frame(self, kind: int, sid: int) -> bytes:
        return _FRAME.pack(kind, self.number, sid)

    def _send_loop(self) -> None:
        while True:
            frame = self._outbox.get()
            if frame is None:
                return
            self.channel.send_bytes(self.peer, frame, stream=TUNNEL, kind="bytes")
            if frame[0] == _END:
                return

    def _recv_loop(self) -> None:
        while True:
            frame = self.channel.recv_bytes(self.peer, stream=TUNNEL, kind="bytes")
            if len(frame) < _FRAME.size:
                raise ValueError(f"tunnel: {self.peer!r} sent a frame of {len(frame)} bytes")
            kind, number, sid = _FRAME.unpack_from(frame)
            if number != self.number:
                raise ValueError(
                    f"tunnel: {self.peer!r} sent a frame of its tunnel #{number} into tunnel #{self.number} "
                    f"(a late frame of a finished exchange?)"
                )
            if kind == _END:
                return
            if kind == _OPEN:
                sock = self._connect_target()
                with self._lock:
                    self._socks[sid] = sock
                threading.Thread(
                    target=self._guard, args=(partial(self._pump, sid, sock),), daemon=True
                ).start()
                continue
            with self._lock:
                sock = self._socks.get(sid)
            if sock is None:
                raise ValueError(f"tunnel: {self.peer!r} sent a frame for unknown stream {sid}")
            try:
                if kind == _DATA:
                    sock.sendall(memoryview(frame)[_FRAME.size :])
                elif kind == _EOF:
                    sock.shutdown(socket.SHUT_WR)
                else:
                    raise ValueError(f"tunnel: {self.peer!r} sent an unknown frame kind {kind}")
            except OSError:
                pass  # the local library already closed this connection

    def _connect_target(self) -> socket.socket:
        """Connect to our library's server; it may still be starting, so retry for a while."""
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError:
                if time.monotonic() > deadline:
                    raise ConnectionError(
                        f"tunnel: nothing serves on loopback port {self.target_port} for {self.peer!r}"
                    ) from None
                time.sleep(0.02)

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped a forwarding thread (a lost peer, a bad frame), if any."""
        return self._error

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Tell the peer we are done, wait for its END, and close every local socket.

        Both parties call this once their library returned, so neither side's frames are cut
        off. An error from a forwarding thread is raised here, and so is a peer that never ends.
        """
        self._outbox.put(self._frame(_END, 0))
        self._threads[1].join()
        self._threads[2].join(timeout=_CONNECT_TIMEOUT_S)
        ended = not self._threads[2].is_alive()
        self._closing = True
        self._shut_local()
        if self._error is not None:
            raise self._error
        if not ended:
            raise PartyConnectionError(
                f"{self.channel.role}: {self.peer!r} did not end tunnel #{self.number} within "
                f"{_CONNECT_TIMEOUT_S:.0f} s of this party's end; stopping rather than leave its frames unread"
            )

    def _shut_local(self) -> None:
        """Close the listener and every local connection."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in self._socks.values():
                try:
                    sock.close()
                except OSError:
                    pass
            self._socks.clear()
