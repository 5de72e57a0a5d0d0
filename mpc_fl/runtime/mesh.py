"""Authenticated, encrypted links between members: the only way a byte leaves a party.

Why our own transport: gloo (torch.distributed) has no TLS in this torch build, and
the review showed every byte on cleartext links, CrypTen's seeds included, and any
process able to claim any rank (../shared/docs/security_review.md F3).

Design:

* Every member listens on its own address (only that address) and dials every other
  member it works with. Each direction of a pair is its own TLS 1.3 connection (OpenSSL
  through :mod:`ssl`), so one thread writes it and one thread reads it: the sender's
  thread writes, a reader thread at the receiver decrypts into per-channel queues. A send
  therefore never waits for the receiver's program, and two parties may send each other
  large messages at once.
* Identity comes from keys: both ends present certificates (mutual TLS) and a link is
  accepted as ``role`` only if the certificate is exactly the one the federation file
  pins for ``role`` (:mod:`mpc_fl.runtime.federation`). The listener closes once every
  expected peer is in, so nobody else can join later.
* TLS gives confidentiality and integrity with per-record sequence numbers: an altered,
  dropped, reordered, replayed or injected record fails authentication and the link
  fails with :class:`LinkIntegrityError` naming it. A peer that ends without TLS's
  close_notify has dropped out.
* Frames inside the stream: ``channel`` (1 byte), ``length`` (8 bytes), payload. Channels
  keep independent streams apart (protocol messages, CrypTen's groups), like gloo's groups.
* The ledger is booked with the bytes that really go on the wire: TLS records of at most
  16384 plaintext bytes, each 22 bytes longer (5-byte header, 1-byte content type,
  16-byte AEAD tag). :func:`wire_bytes` gives a message's size; the sender's count comes
  from the encrypted bytes themselves, the receiver's from :func:`wire_bytes`.

``insecure_cleartext`` (``--insecure-cleartext``, debugging only): plain TCP, a peer's
role is whatever it claims, nothing is encrypted.

Network emulation (``--emulate-rtt-ms``, ``--emulate-mbit``; experiments only): this
kernel has no netem, so every member shapes its own outgoing links in the transport that
every byte already passes through (:class:`LinkEmulator`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mpc_fl.runtime.errors import LinkIntegrityError, PartyConnectionError
from mpc_fl.runtime.federation import DEALER, Federation
from mpc_fl.runtime.identity import certificate_der, check_key_matches, fingerprint
from mpc_fl.runtime.ledger import Ledger

log = logging.getLogger(__name__)

#: Frame channels: protocol messages, CrypTen's three process groups, link control, a tunnelled
#: library's connections (PSI). Each is its own stream: one can never be read as another.
APP, CRYPTEN_MAIN, CRYPTEN_TTP, CRYPTEN_TTP_COMM, CONTROL, TUNNEL = range(6)
N_CHANNELS = 6
CHANNEL_NAMES = ("protocol", "crypten", "crypten-dealer", "crypten-dealer-broadcast", "control", "tunnel")

_HEADER = struct.Struct("<BQ")
HEADER_BYTES = _HEADER.size
TLS_RECORD = 16384
TLS_RECORD_OVERHEAD = 22
#: Plaintext written per TLS write: a whole number of records, so record boundaries are predictable.
_CHUNK = 64 * TLS_RECORD
_HANDSHAKE_TIMEOUT_S = 5.0
#: A CONTROL frame that starts with this tells the receiver the sender stopped (the rest: why).
_ABORT = b"\x00abort:"


def wire_bytes(payload_bytes: int, tls: bool = True) -> int:
    """Bytes on the wire for one message of ``payload_bytes`` (frame header and TLS records included)."""
    n = HEADER_BYTES + payload_bytes
    return n + (TLS_RECORD_OVERHEAD * -(-n // TLS_RECORD) if tls else 0)


def _tls_context(server: bool, key_file: str, trusted_pem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity is the pinned certificate, not a host name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(certfile=key_file)  # the key file holds the key and its certificate
    ctx.load_verify_locations(cadata=trusted_pem)
    if server:
        ctx.num_tickets = 0  # no session resumption: every link does a full handshake
    return ctx


class _Down:
    """Queued after a link's last message: receiving it raises ``error``."""

    def __init__(self, error: PartyConnectionError):
        self.error = error


class LinkEmulator:
    """One outgoing link as a WAN would carry it: paced at a bandwidth, delivered half an RTT later.

    What it emulates: a full-duplex link per direction with a fixed one-way delay (rtt / 2) and
    a serialisation rate (bytes on the wire, TLS records included, over ``mbit``): a frame
    starts when the link is free, takes ``bytes / rate`` to send, and is handed to the socket
    one one-way delay after its last byte left. Frames keep their order and senders never wait
    (a send returns at once, as with a kernel socket buffer). Not emulated: loss, jitter, TCP
    slow start and congestion control, the connection set-up (handshakes run unshaped).
    Sleep granularity (~0.1 ms) bounds its precision.
    """

    def __init__(self, sock: socket.socket, rtt_ms: float, mbit: float):
        self.sock = sock
        self.one_way_s = rtt_ms / 2e3
        self.bytes_per_s = mbit * 1e6 / 8 if mbit > 0 else float("inf")
        self._free_at = 0.0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._deliver, daemon=True, name="link-emulator")
        self._thread.start()

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        now = time.monotonic()
        self._free_at = max(now, self._free_at) + len(data) / self.bytes_per_s
        self._queue.put((self._free_at + self.one_way_s, bytes(data)))

    def _deliver(self) -> None:
        while True:
            due, data = self._queue.get()
            if data is None:
                return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.sock.sendall(data)
            except OSError as err:
                self._error = err
                return

    def drain(self, timeout_s: float) -> None:
        """Deliver what is queued (at most ``timeout_s``), then stop."""
        self._queue.put((0.0, None))
        self._thread.join(timeout_s)


class _TLSStream:
    """One direction of a TLS connection over a blocking socket (memory BIOs: we see every wire byte)."""

    def __init__(self, sock: socket.socket, obj: ssl.SSLObject | None):
        self.sock, self.obj = sock, obj
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._raw = bytearray(1 << 20)
        self.wire_in = self.wire_out = 0
        self._sendall = sock.sendall
        self.emulator: LinkEmulator | None = None

    def emulate(self, rtt_ms: float, mbit: float) -> None:
        """From now on, every byte written goes out through a :class:`LinkEmulator`."""
        self.emulator = LinkEmulator(self.sock, rtt_ms, mbit)
        self._sendall = self.emulator.sendall

    @classmethod
    def wrap(cls, sock: socket.socket, ctx: ssl.SSLContext | None, server: bool) -> _TLSStream:
        stream = cls(sock, None)
        if ctx is not None:
            stream.obj = ctx.wrap_bio(stream.inc, stream.out, server_side=server)
            stream._handshake()
        return stream

    def _flush(self) -> None:
        data = self.out.read()
        if data:
            self._sendall(data)
            self.wire_out += len(data)

    def _pull(self) -> None:
        n = self.sock.recv_into(self._raw)
        if n == 0:
            raise ConnectionResetError("connection closed")
        self.wire_in += n
        self.inc.write(memoryview(self._raw)[:n])

    def _handshake(self) -> None:
        assert self.obj is not None
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._pull()

    def peer_der(self) -> bytes | None:
        return None if self.obj is None else self.obj.getpeercert(binary_form=True)

    def write(self, data: bytes | memoryview) -> None:
        if self.obj is None:
            self._sendall(data)
            self.wire_out += len(data)
            return
        view = memoryview(data)
        while len(view):
            n = self.obj.write(view)
            view = view[n:]
        self._flush()

    def read_into(self, view: memoryview) -> bool:
        """Fill ``view`` with plaintext; False on a clean close before the first byte."""
        pos = 0
        while pos < len(view):
            if self.obj is None:
                n = self.sock.recv_into(view[pos:])
                if n == 0:
                    if pos == 0:
                        return False
                    raise ConnectionResetError("connection closed mid-message")
                self.wire_in += n
                pos += n
                continue
            try:
                got = self.obj.read(len(view) - pos, view[pos:])
            except ssl.SSLWantReadError:
                self._pull()
                continue
            except ssl.SSLZeroReturnError:
                got = 0
            if got == 0:  # the peer's close_notify (CPython reports it as a read of 0 bytes)
                if pos == 0:
                    return False
                raise ConnectionResetError("TLS closed mid-message")
            pos += got
        return True

    def close(self, goodbye: bool) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, ValueError):
            if goodbye and self.obj is not None:
                with contextlib.suppress(ssl.SSLWantReadError):  # we do not wait for the peer's
                    self.obj.unwrap()  # close_notify on a send-only link
                self._flush()
            if self.emulator is not None:  # what is still in flight arrives before the socket closes
                self.emulator.drain(timeout_s=60.0 if goodbye else 2.0)
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@dataclass
class _InLink:
    peer: str
    stream: _TLSStream
    queues: tuple[queue.SimpleQueue, ...]


class Mesh:
    """This member's links to the peers it works with, once :meth:`connect` has returned."""

    def __init__(
        self,
        fed: Federation,
        me: str,
        key_file: str,
        ledger: Ledger,
        *,
        peers: tuple[str, ...],
        listen: tuple[str, int] | None = None,
        deadline: float | None = None,
    ):
        self.fed, self.me, self.ledger, self.peers = fed, me, ledger, tuple(peers)
        self.tls = not fed.insecure_cleartext
        self._key_file = str(key_file)
        own = fed.member(me)
        if self.tls:
            check_key_matches(key_file, own.certificate, me)
        self._listen = listen or (own.host, own.port)
        self._deadline = deadline if deadline is not None else time.monotonic() + fed.connect_timeout_s
        self._ders = {m.role: certificate_der(m.certificate) for m in fed.members}
        self._out: dict[str, _TLSStream] = {}
        self._in: dict[str, _InLink] = {}
        self._send_locks = {p: threading.Lock() for p in self.peers}
        self._lock = threading.Lock()
        self._closed = False
        #: set by a helper thread: a fatal connection problem, or a peer's abort
        self._failure: PartyConnectionError | None = None
        #: the first link that went down, closed or broke (an idle service checks it)
        self.broken: PartyConnectionError | None = None

    # ------------------------------------------------------------------ connecting
    def connect(self) -> None:
        """Open every link, both directions; name the peers missing at the deadline.

        Stops at once, naming the reason, if a peer that is already linked aborts (see :meth:`abort`).
        """
        server_ctx, client_ctx = self._context(server=True), self._context(server=False)
        host, port = self._listen
        try:
            listener = socket.create_server(self._listen)
        except OSError as err:
            raise PartyConnectionError(
                f"{self.me}: cannot listen on {host}:{port} ({err.strerror or err}); is another process using it?"
            ) from None
        listener.settimeout(0.2)
        threading.Thread(target=self._accept_all, args=(listener, server_ctx), daemon=True).start()
        for p in self.peers:
            threading.Thread(target=self._dial, args=(p, client_ctx), daemon=True).start()
        try:
            while not all(p in self._out and p in self._in for p in self.peers):
                if self._failure is not None:
                    raise self._failure
                if time.monotonic() > self._deadline:
                    missing = ", ".join(
                        repr(p) for p in self.peers if p not in self._out or p not in self._in
                    )
                    raise PartyConnectionError(
                        f"{self.me}: {missing} did not connect within {self.fed.connect_timeout_s:.0f} s"
                    )
                time.sleep(0.02)
        except BaseException:
            self._closed = True
            self.close(goodbye=False)
            raise
        finally:
            listener.close()

    def _context(self, server: bool) -> ssl.SSLContext | None:
        """This member's TLS context, trusting exactly the federation's certificates (None: cleartext)."""
        if not self.tls:
            return None
        return _tls_context(server, self._key_file, "".join(m.certificate for m in self.fed.members))

    def _dial(self, peer: str, ctx: ssl.SSLContext | None) -> None:
        m = self.fed.member(peer)
        while time.monotonic() < self._deadline and not self._closed:
            try:
                sock = socket.create_connection((m.host, m.port), timeout=_HANDSHAKE_TIMEOUT_S)
            except OSError:
                time.sleep(0.1)
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                stream = _TLSStream.wrap(sock, ctx, server=False)
                if not self.tls:  # unauthenticated hello; the listener's reply shows it took us in
                    stream.write(_HEADER.pack(CONTROL, len(self.me)) + self.me.encode())
                    if not stream.read_into(memoryview(bytearray(1))):
                        raise ConnectionResetError("no reply to hello")
                sock.settimeout(None)
            except (OSError, ssl.SSLError) as err:
                sock.close()
                if isinstance(err, ssl.SSLCertVerificationError):
                    self._failure = PartyConnectionError(
                        f"{self.me}: the party listening at {m.address} is not {peer!r}: "
                        f"its certificate is not the one the federation file pins ({err.verify_message})"
                    )
                    return
                time.sleep(0.1)  # the peer's listener is not ready, or refused us: retry until the deadline
                continue
            if self.tls and stream.peer_der() != self._ders[peer]:
                stream.close(goodbye=False)
                self._failure = PartyConnectionError(
                    f"{self.me}: the party at {m.address} presented another member's key, not {peer!r}'s"
                )
                return
            self._book_handshake(stream, peer)
            if self.fed.emulates_network:
                stream.emulate(self.fed.emulated_rtt_ms, self.fed.emulated_mbit)
            self._out[peer] = stream
            return

    def _accept_all(self, listener: socket.socket, ctx: ssl.SSLContext | None) -> None:
        while time.monotonic() < self._deadline and len(self._in) < len(self.peers) and not self._closed:
            try:
                sock, addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._admit, args=(sock, addr, ctx), daemon=True).start()

    def _admit(self, sock: socket.socket, addr: tuple, ctx: ssl.SSLContext | None) -> None:
        """TLS-handshake an incoming link and learn who it is from its certificate; refuse strangers."""
        sock.settimeout(_HANDSHAKE_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = _TLSStream.wrap(sock, ctx, server=True)
            if self.tls:
                der = stream.peer_der()
                peer = next((r for r, d in self._ders.items() if d == der), None)
            else:
                head = bytearray(HEADER_BYTES)
                stream.read_into(memoryview(head))
                _, n = _HEADER.unpack(head)
                name = bytearray(min(n, 64))
                stream.read_into(memoryview(name))
                peer = name.decode(errors="replace")
            sock.settimeout(None)
        except (OSError, ssl.SSLError, ValueError) as err:
            log.info("%s: refused a connection from %s:%s (%s)", self.me, addr[0], addr[1], err)
            sock.close()
            return
        with self._lock:
            if peer not in self.peers or peer in self._in:
                why = "an unexpected member" if peer else "a key that is not in the federation"
                log.info("%s: refused a connection from %s:%s: %s", self.me, addr[0], addr[1], why)
                stream.close(goodbye=False)
                return
            link = _InLink(peer, stream, tuple(queue.SimpleQueue() for _ in range(N_CHANNELS)))
            self._in[peer] = link
        if not self.tls:
            stream.sock.sendall(b"\x01")
        self._book_handshake(stream, peer)
        threading.Thread(target=self._read_loop, args=(link,), daemon=True, name=f"from-{peer}").start()

    def _book_handshake(self, stream: _TLSStream, peer: str) -> None:
        dealer = peer == DEALER
        with self._lock:
            self.ledger.record_send(stream.wire_out, dealer=dealer, rounds=0)
            self.ledger.record_recv(stream.wire_in, dealer=dealer)
        stream.wire_out = stream.wire_in = 0

    # ------------------------------------------------------------------ receiving
    def _read_loop(self, link: _InLink) -> None:
        head = bytearray(HEADER_BYTES)
        where = f"the link {link.peer} -> {self.me}"
        try:
            while True:
                if not link.stream.read_into(memoryview(head)):
                    raise _CleanClose
                channel, n = _HEADER.unpack(head)
                if channel >= N_CHANNELS:
                    raise ValueError(f"frame for unknown channel {channel}")
                payload = bytearray(n)
                link.stream.read_into(memoryview(payload))
                if channel == CONTROL and payload.startswith(_ABORT):
                    reason = payload[len(_ABORT) :].decode(errors="replace")
                    raise _PeerAborted(reason)
                link.queues[channel].put(payload)
        except _PeerAborted as err:
            error: PartyConnectionError = PartyConnectionError(f"{self.me}: {link.peer!r} stopped: {err}")
            if self._failure is None:
                self._failure = error
        except _CleanClose:
            error = PartyConnectionError(
                f"{self.me}: {link.peer!r} closed its link (it finished or stopped) while {self.me} "
                f"still expected a message from it"
            )
        except ssl.SSLError as err:
            error = LinkIntegrityError(
                f"{self.me}: integrity check failed on {where}: a message was altered, dropped, "
                f"replayed or injected ({err.reason or err})"
            )
        except (OSError, ValueError) as err:
            if self._closed:
                return
            error = PartyConnectionError(f"{self.me}: {link.peer!r} dropped out ({where} broke: {err})")
        self.broken = self.broken or error
        for q in link.queues:
            q.put(_Down(error))

    def recv(self, peer: str, channel: int, timeout_s: float | None = None) -> bytearray:
        """The next message from ``peer`` on ``channel``; raises naming the link if it broke."""
        link = self._in[peer]
        timeout_s = self.fed.op_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                item = link.queues[channel].get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                break
            except queue.Empty:
                if self._failure is not None:  # another peer stopped: do not wait for this one
                    raise self._failure from None
                if time.monotonic() >= deadline:
                    raise PartyConnectionError(
                        f"{self.me}: no {CHANNEL_NAMES[channel]} message from {peer!r} within {timeout_s:.0f} s"
                    ) from None
        return self._take(peer, channel, item)

    def _take(self, peer: str, channel: int, item: bytearray | _Down) -> bytearray:
        """Book a received message, or raise the error its link ended with."""
        if isinstance(item, _Down):
            self._in[peer].queues[channel].put(item)  # every later receive fails the same way
            raise item.error
        with self._lock:
            self.ledger.record_recv(wire_bytes(len(item), self.tls), dealer=peer == DEALER)
        return item

    # ------------------------------------------------------------------ sending
    def send(self, peer: str, channel: int, payload: bytes | bytearray | memoryview) -> None:
        view = memoryview(payload).cast("B")
        n = len(view)
        stream = self._out[peer]
        try:
            with self._send_locks[peer]:
                before = stream.wire_out
                head = _HEADER.pack(channel, n)
                if not self.tls:
                    stream.write(head + bytes(view))
                else:
                    first = _CHUNK - HEADER_BYTES
                    stream.write(head + bytes(view[:first]))
                    for start in range(first, n, _CHUNK):
                        stream.write(view[start : start + _CHUNK])
                sent = stream.wire_out - before
        except (OSError, ssl.SSLError) as err:
            raise PartyConnectionError(
                f"{self.me}: cannot send to {peer!r}: the link {self.me} -> {peer} is down ({err})"
            ) from None
        with self._lock:
            self.ledger.record_send(sent, dealer=peer == DEALER, rounds=0)

    # ------------------------------------------------------------------ control
    def exchange_hello(self, hello: dict, check: Callable[[str, dict], None]) -> None:
        """Send ``hello`` to every peer and ``check`` each peer's hello as soon as it arrives.

        Checking in arrival order means a mismatch is found even while another peer is still
        connecting elsewhere (e.g. a dealer that a party running a dealer-less protocol ignores).
        """
        data = json.dumps(hello, sort_keys=True).encode()
        for p in self.peers:
            self.send(p, CONTROL, data)
        pending = list(self.peers)
        deadline = max(time.monotonic() + 5.0, self._deadline)
        while pending:
            for p in list(pending):
                try:
                    item = self._in[p].queues[CONTROL].get_nowait()
                except queue.Empty:
                    continue
                pending.remove(p)
                check(p, json.loads(bytes(self._take(p, CONTROL, item))))
            if self._failure is not None:
                raise self._failure
            if pending and time.monotonic() > deadline:
                raise PartyConnectionError(
                    f"{self.me}: no handshake from {', '.join(repr(p) for p in pending)} within "
                    f"{self.fed.connect_timeout_s:.0f} s of starting"
                )
            time.sleep(0.005)

    def announce_abort(self, reason: str) -> list[str]:
        """Without taking part: dial every peer, tell each that this member stops and why, leave.

        For a member whose own input is bad: its peers would otherwise wait out their connect
        timeout and blame the wrong member. Returns the peers told before the deadline.
        """
        client_ctx = self._context(server=False)
        for p in self.peers:
            threading.Thread(target=self._dial, args=(p, client_ctx), daemon=True).start()
        told: list[str] = []
        data = _ABORT + reason.encode()[:2000]
        while len(told) < len(self.peers) and time.monotonic() < self._deadline and self._failure is None:
            for peer in [p for p in list(self._out) if p not in told]:
                with contextlib.suppress(PartyConnectionError):
                    self.send(peer, CONTROL, data)
                    told.append(peer)
            time.sleep(0.02)
        self.close(goodbye=True)
        return told

    def abort(self, reason: str) -> None:
        """Tell every peer, best effort, that this member stops and why; they fail at once naming it."""
        data = _ABORT + reason.encode()[:2000]
        for peer, stream in list(self._out.items()):
            with contextlib.suppress(OSError, ssl.SSLError, PartyConnectionError):
                stream.sock.settimeout(2.0)
                self.send(peer, CONTROL, data)

    # ------------------------------------------------------------------ closing
    def close(self, goodbye: bool = True) -> None:
        """Say goodbye (TLS close_notify) on every outgoing link and close all sockets."""
        self._closed = True
        for stream in self._out.values():
            stream.close(goodbye)
        for link in self._in.values():
            link.stream.close(goodbye=False)

    def fingerprints(self) -> dict[str, str]:
        return {r: fingerprint(d) for r, d in self._ders.items()}


class _CleanClose(Exception):
    pass


class _PeerAborted(Exception):
    pass
