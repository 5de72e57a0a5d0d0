"""Carry a library's own connections over a :class:`~mpc_fl.runtime.channel.Channel`.

Why: a native library (SecretFlow's PSI, over brpc) insists on opening its own sockets. Left
alone, its bytes would bypass the parties' TLS links, their key-based identities, the ledger
and the link emulation. A :class:`Tunnel` gives the library a local address that stands for
the peer: every connection the library opens to it is forwarded, frame by frame, over the
channel to the peer's tunnel, which connects to the peer library's own server. So the
library talks to the peer only through the authenticated, encrypted, counted channel.

Both parties run the same code. Frames are ``kind (1 byte) | tunnel (4 bytes) | stream id
(4 bytes) | payload``; stream ids opened by the party whose role sorts first are even, the
other's odd. Frames travel on the channel's own tunnel stream (:data:`~mpc_fl.runtime.channel.TUNNEL`),
never on the protocols' stream, so a library's late frame cannot be read by the next phase.
Tunnels to a peer are numbered in the order both parties open them, and every frame carries
its tunnel's number: a frame of another (finished) tunnel is an error naming both. Closing is
a handshake: each side sends END after its library returned and waits for the peer's END;
a tunnel that does not end that way fails the run rather than leave a reader behind. A
stream the peer opens after this party's library stopped is refused at once (REFUSE), so
neither side waits for a server that is gone.

The local link: the unauthenticated leg between the library and this party's process.
Anything that reaches it speaks for this party, so it is kept to the library alone:

- both ends are Unix sockets in ``directory``, which must be private to this user (mode
  0700): other users' processes cannot connect at all (the kernel refuses the path);
- every connection to the tunnel's listener is checked by its peer credentials
  (``SO_PEERCRED``): it must come from the library's process (:meth:`Tunnel.admit`), else the
  run stops with :class:`TunnelIntrusionError` naming the tunnel. The listener takes exactly
  ``connections`` connections and is then unlinked and closed;
- the tunnel connects to the library's server itself as soon as it binds (polling every
  millisecond), checks that the server is the library's process, unlinks the server's path
  once it has its ``connections`` connections, and stops the run if the server then has more
  connections than its own (counted in ``/proc/net/unix``).

Not protected: processes of the same user (or root), which could read this party's keys and
data anyway. The tunnel's check names them; but the library's server cannot check who
connects, and a same-user process that connects in the millisecond or so between the server
binding and the tunnel connecting, and leaves before the count, goes unseen (it can push
messages into the library, not read the library's).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from mpc_fl.runtime.channel import TUNNEL, Channel
from mpc_fl.runtime.errors import LinkIntegrityError, PartyConnectionError

__all__ = ["Tunnel", "TunnelIntrusionError"]

log = logging.getLogger(__name__)

_OPEN, _DATA, _EOF, _END, _REFUSE = range(5)
_FRAME = struct.Struct("<BII")
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_READ = 1 << 16
_CONNECT_TIMEOUT_S = 60.0
_MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
_ACCEPTCON = 0x10000  # /proc/net/unix flag of a listening socket


class TunnelIntrusionError(LinkIntegrityError):
    """A local process other than the party's own library reached a tunnel's socket."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a connected Unix socket."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


def _connections_to(path: Path) -> int:
    """How many sockets are connected (or queued) to the Unix server at ``path``, from
    ``/proc/net/unix``: an accepted socket carries its listener's path, listening ones are flagged."""
    name = str(path)
    with open("/proc/net/unix") as fh:
        next(fh)
        rows = [line.split() for line in fh]
    return sum(1 for r in rows if len(r) >= 8 and r[7] == name and not int(r[3], 16) & _ACCEPTCON)


def _check_private(directory: Path) -> None:
    st = directory.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(
            f"tunnel: {directory} must belong to this user with mode 0700 "
            f"(it has uid {st.st_uid}, mode {st.st_mode & 0o777:o}); other users could reach its sockets"
        )


def _socket_path(path: Path) -> str:
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ValueError(
            f"tunnel: socket path {path} is longer than {_MAX_UNIX_PATH} bytes; use a shorter $TMPDIR"
        )
    return str(path)


class Tunnel:
    """Forward one library's connections between two parties' private Unix sockets over ``channel``.

    ``directory``: this user's private directory (0700) for both sockets. :attr:`path`: where
    this party's library connects to reach the peer. :attr:`target`: where this party's library
    must serve (the peer's streams connect there). Call :meth:`admit` with the library's pid
    once it runs, and :meth:`library_stopped` once it exits. ``connections``: how many
    connections the library opens to the peer (and the peer's library to it).
    """

    def __init__(
        self,
        channel: Channel,
        peer: str,
        directory: Path,
        *,
        connections: int = 1,
        label: str = "tunnel",
    ):
        self.channel = channel
        self.peer = peer
        self.connections = connections
        self.label = label
        self.number = channel.next_tunnel_number(peer)
        directory = Path(directory)
        _check_private(directory)
        self.path = directory / f"tunnel-{self.number}.sock"
        self.target = directory / f"library-{self.number}.sock"
        _socket_path(self.target)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(_socket_path(self.path))
        os.chmod(self.path, 0o600)
        self._listener.listen(connections + 8)  # room for intruders, so each one is seen and named
        self._pid: int | None = None
        self._admitted = threading.Event()
        self._stopped = threading.Event()
        self._socks: dict[int, socket.socket] = {}
        self._refused: set[int] = set()
        self._peer_streams = 0
        self._dialed: queue.Queue[socket.socket] = queue.Queue()
        self.refusals: list[str] = []
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

    def admit(self, pid: int) -> None:
        """Let process ``pid`` (the library, just started) connect; no connection is judged before.

        Also starts connecting to the library's server the moment it binds, rather than when
        the peer first needs it: the server cannot check who connects, so its path must be
        unlinked as soon as possible.
        """
        self._pid = pid
        self._admitted.set()
        threading.Thread(target=self._guard, args=(self._dial_loop,), daemon=True).start()

    def library_stopped(self) -> None:
        """The local library exited: refuse the peer's new streams at once instead of waiting for it."""
        self._stopped.set()

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped a forwarding thread (a lost peer, a bad frame, an intruder), if any."""
        return self._error

    # ------------------------------------------------------------------ threads
    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as err:  # surfaced by close() or failed
            if not self._closing and self._error is None:
                self._error = err
            self._outbox.put(None)

    def _where(self) -> str:
        return f"{self.label} #{self.number} with {self.peer!r}"

    def _intruder(self, sock: socket.socket, what: str) -> TunnelIntrusionError | None:
        """An error naming ``sock``'s process unless it is the admitted library."""
        pid, uid, _ = peer_credentials(sock)
        if pid == self._pid and uid == os.geteuid():
            return None
        return TunnelIntrusionError(
            f"{self.channel.role}: an unexpected local process (pid {pid}, uid {uid}) {what} "
            f"{self._where()}; the run stops"
        )

    def _accept_loop(self) -> None:
        for _ in range(self.connections):
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            self._admitted.wait()
            if self._closing:
                sock.close()
                return
            if (err := self._intruder(sock, "connected to")) is not None:
                sock.close()
                raise err
            self._open_local(sock)
        self._retire_listener()

    def _retire_listener(self) -> None:
        """Unlink the listener's path, so nothing can connect, then vet what was already queued."""
        self.path.unlink(missing_ok=True)
        self._listener.setblocking(False)
        try:
            while True:
                try:
                    sock, _ = self._listener.accept()
                except OSError:  # nothing queued (or closed)
                    return
                with sock:
                    err = self._intruder(sock, "connected to")
                raise err or PartyConnectionError(
                    f"{self.channel.role}: the library opened more than {self.connections} connection(s) "
                    f"to {self._where()}; the run stops"
                )
        finally:
            self._listener.close()

    def _open_local(self, sock: socket.socket) -> None:
        with self._lock:
            sid = self._next_sid
            self._next_sid += 2
            self._socks[sid] = sock
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
                self._peer_opened(sid)
                continue
            if kind == _REFUSE:
                self._peer_refused(sid)
                continue
            with self._lock:
                sock = self._socks.get(sid)
            if sock is None:
                if sid in self._refused:
                    continue  # frames the peer sent before it saw our refusal
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

    def _peer_opened(self, sid: int) -> None:
        if sid in self._socks or sid in self._refused:
            raise ValueError(f"tunnel: {self.peer!r} opened stream {sid} twice")
        self._peer_streams += 1
        if self._peer_streams > self.connections:
            raise PartyConnectionError(
                f"{self.channel.role}: {self.peer!r} opened more than {self.connections} stream(s) on "
                f"{self.label} #{self.number}; the run stops"
            )
        sock = self._library_connection()
        if sock is None:
            self._refused.add(sid)
            self._outbox.put(self._frame(_REFUSE, sid))
            log.info(
                "%s: %r opened stream %d on %s #%d after this party's library stopped; refused",
                self.channel.role, self.peer, sid, self.label, self.number,
            )  # fmt: skip
            return
        with self._lock:
            self._socks[sid] = sock
        threading.Thread(target=self._guard, args=(partial(self._pump, sid, sock),), daemon=True).start()

    def _peer_refused(self, sid: int) -> None:
        """The peer's library had stopped: cut our library's connection now rather than let it wait."""
        with self._lock:
            sock = self._socks.get(sid)
        if sock is None:
            raise ValueError(f"tunnel: {self.peer!r} refused unknown stream {sid}")
        line = (
            f"{self.channel.role}: the library of {self.peer!r} had stopped when this party's library "
            f"opened stream {sid} on {self.label} #{self.number}; the stream was refused"
        )
        self.refusals.append(line)
        log.info("%s", line)
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes its pump, which ends it with EOF (ignored by the peer)
        except OSError:
            pass

    def _library_connection(self) -> socket.socket | None:
        """One of the dial loop's connections to our library (it may still be starting); None once
        the library has stopped."""
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S
        while not self._stopped.is_set():
            try:
                return self._dialed.get(timeout=0.02)
            except queue.Empty:
                pass
            if time.monotonic() > deadline:
                raise PartyConnectionError(
                    f"{self.channel.role}: this party's library did not serve {self._where()} within "
                    f"{_CONNECT_TIMEOUT_S:.0f} s of the peer's connection"
                )
        return None

    def _dial_loop(self) -> None:
        """Connect ``connections`` times to our library's server as soon as it binds, checking it
        is the library, then unlink its path so nothing else can connect."""
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S
        dialed = 0
        while dialed < self.connections and not self._stopped.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.target))
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()  # not bound yet: retry soon, the path is open to same-user processes
                if time.monotonic() > deadline:
                    return  # the peer's stream reports it (or nothing needed the library)
                time.sleep(0.001)
                continue
            if (err := self._intruder(sock, "serves the library's socket of")) is not None:
                sock.close()
                raise err
            dialed += 1
            self._dialed.put(sock)
        self.target.unlink(missing_ok=True)
        if dialed and (extra := _connections_to(self.target) - dialed) > 0:
            raise TunnelIntrusionError(
                f"{self.channel.role}: {extra} unexpected local connection(s) reached the library's socket "
                f"of {self._where()} before this party's; the run stops"
            )

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Tell the peer we are done, wait for its END, and close every local socket.

        Both parties call this once their library returned, so neither side's frames are cut
        off. An error from a forwarding thread is raised here, and so is a peer that never ends.
        """
        self._stopped.set()
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
        """Close the listener and every local connection, and remove the listener's path."""
        self._stopped.set()
        self._admitted.set()  # wakes an accept waiting for the library's pid
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
        except OSError:
            pass
        self._listener.close()
        self.path.unlink(missing_ok=True)
        while not self._dialed.empty():  # dialed, never used by a stream
            self._dialed.get().close()
        with self._lock:
            for sock in self._socks.values():
                try:
                    sock.close()
                except OSError:
                    pass
            self._socks.clear()
