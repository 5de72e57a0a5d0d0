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
  pins for ``role`` (:mod:`mpc_fl.runtime.federation`). No member's certificate acts as a
  certificate authority: the dialler builds no chain at all (TLS still checks the
  listener's handshake signature; the exact pin is checked before the link is used), and
  the listener's OpenSSL trusts the pinned certificates, which (``CA:FALSE``, see
  :mod:`mpc_fl.runtime.identity`) sign nothing else, then applies the same pin. A refused
  certificate is named for what it is: another member's, one minted by member X's key, or
  a stranger's. The listener closes once every expected peer is in, so nobody else can join later.
* The first bytes on a connection state its mode: a TLS ClientHello starts with 0x16, a
  cleartext hello with :data:`_CLEAR_HELLO`; each side answers a hello of the other mode
  with a one-line refusal, so members started in different modes fail within seconds,
  naming the peer and both modes, instead of timing out.
* TLS gives confidentiality and integrity with per-record sequence numbers: an altered,
  dropped, reordered, replayed or injected record fails authentication and the link
  fails with :class:`LinkIntegrityError` naming it. A peer that ends without TLS's
  close_notify has dropped out.
* Frames inside the stream: ``channel`` (1 byte), ``length`` (8 bytes), payload. Channels
  keep independent streams apart (protocol messages, CrypTen's groups), like gloo's groups.
  A length above ``Federation.max_frame_bytes`` breaks the link at once naming it; payloads
  are allocated as their bytes arrive (blocks of 64 MiB), so an announced length reserves
  nothing. Whatever goes wrong in a reader thread breaks the mesh: every receive fails at
  once with the reason instead of waiting out its timeout.
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
import functools
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
from mpc_fl.runtime.identity import certificate_der, check_key_matches, fingerprint, signer_of, subject_of
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
#: Payloads above this are allocated block by block as they arrive.
_ALLOC_BLOCK = 1 << 26
#: The first bytes of every connection state its mode. A TLS ClientHello starts with 0x16 (a
#: handshake record); a cleartext dialler sends this first, and a cleartext listener answers a
#: ClientHello with it. A TLS listener answers a cleartext hello with :data:`_TLS_ONLY`.
_TLS_RECORD_HANDSHAKE = 0x16
_TLS_RECORD_ALERT = 0x15
_CLEAR_HELLO = b"mpc_fl cleartext link\n"
_TLS_ONLY = b"mpc_fl TLS links only\n"
_MODE_HINT = "every member must run in the same link mode"
#: How long a member that found a mode mismatch keeps answering dials before it closes.
_MODE_LINGER_S = 2.0


def wire_bytes(payload_bytes: int, tls: bool = True) -> int:
    """Bytes on the wire for one message of ``payload_bytes`` (frame header and TLS records included)."""
    n = HEADER_BYTES + payload_bytes
    return n + (TLS_RECORD_OVERHEAD * -(-n // TLS_RECORD) if tls else 0)


def _tls_context(server: bool, key_file: str, trusted_pem: str) -> ssl.SSLContext:
    """TLS 1.3 with this member's key; the listener requires a client certificate.

    The dialler sets no trust store (``CERT_NONE``): it checks the listener's certificate
    against the exact pin itself (:meth:`Mesh._dial`), so no member's certificate can act as
    a CA for it, and it learns what a refused certificate is. TLS still verifies the
    listener's CertificateVerify signature, so a pinned certificate proves its key. The
    listener must verify to request a certificate at all: it trusts the pinned certificates.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity is the pinned certificate, not a host name
    ctx.load_cert_chain(certfile=key_file)  # the key file holds the key and its certificate
    if server:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=trusted_pem)
        ctx.num_tickets = 0  # no session resumption: every link does a full handshake
    else:
        ctx.verify_mode = ssl.CERT_NONE  # the exact pin is checked after the handshake, before any use
    return ctx


class _OtherMode(Exception):
    """The peer answered in the other link mode (``tls``: it speaks TLS, else cleartext)."""

    def __init__(self, tls: bool):
        super().__init__("TLS" if tls else "cleartext")
        self.tls = tls


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


def _starts_like(got: bytes, magic: bytes) -> bool:
    """Whether ``got`` begins ``magic`` (or is its first 5+ bytes, if TCP split it)."""
    return len(got) >= 5 and (got.startswith(magic) or magic.startswith(got))


class _TLSStream:
    """One direction of a TLS connection over a blocking socket (memory BIOs: we see every wire byte)."""

    def __init__(self, sock: socket.socket, obj: ssl.SSLObject | None):
        self.sock, self.obj = sock, obj
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._raw = bytearray(1 << 20)
        self.wire_in = self.wire_out = 0
        #: the first bytes received (unencrypted wire bytes), to tell a peer in the other mode
        self.first_in = b""
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
        if len(self.first_in) < len(_CLEAR_HELLO):
            self.first_in += bytes(self._raw[: min(n, len(_CLEAR_HELLO) - len(self.first_in))])
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
            except ssl.SSLError:
                if _starts_like(self.first_in, _CLEAR_HELLO):
                    raise _OtherMode(tls=False) from None
                raise

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
        #: a connection in the other link mode reached the listener: (when, the line saying so)
        self._other_mode_seen: tuple[float, str] | None = None
        #: the failure is a link-mode mismatch: linger so the peer's dials get the same answer
        self._mode_mismatch = False

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
                seen = self._other_mode_seen
                # cleartext links are unauthenticated anyway: a TLS hello ends them, once this
                # member's own dial has had a moment to name the peer (TLS: never, a stranger could)
                if seen and not self.tls and time.monotonic() - seen[0] > 1.0:
                    self._mode_mismatch = True
                    raise PartyConnectionError(seen[1])
                if time.monotonic() > self._deadline:
                    missing = ", ".join(
                        repr(p) for p in self.peers if p not in self._out or p not in self._in
                    )
                    raise PartyConnectionError(
                        f"{self.me}: {missing} did not connect within {self.fed.connect_timeout_s:.0f} s"
                        + (f"; {seen[1].removeprefix(f'{self.me}: ')}" if seen else "")
                    )
                time.sleep(0.02)
        except BaseException:
            if self._mode_mismatch:  # a peer whose dial arrives now learns why too, not by its timeout
                time.sleep(max(0.0, min(_MODE_LINGER_S, self._deadline - time.monotonic())))
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
                    stream.write(_CLEAR_HELLO + _HEADER.pack(CONTROL, len(self.me)) + self.me.encode())
                    _read_hello_reply(stream)
                sock.settimeout(None)
            except _OtherMode as err:
                sock.close()
                self._mode_mismatch = True
                self._failure = PartyConnectionError(self._mode_line(peer, m.address, peer_tls=err.tls))
                return
            except (OSError, ssl.SSLError):
                sock.close()
                time.sleep(0.1)  # the peer's listener is not ready, or refused us: retry until the deadline
                continue
            if self.tls and stream.peer_der() != self._ders[peer]:
                stream.close(goodbye=False)
                self._failure = PartyConnectionError(self._impostor_line(peer, m.address, stream.peer_der()))
                return
            self._book_handshake(stream, peer)
            if self.fed.emulates_network:
                stream.emulate(self.fed.emulated_rtt_ms, self.fed.emulated_mbit)
            self._out[peer] = stream
            return

    def _mode_line(self, peer: str, address: str, *, peer_tls: bool) -> str:
        if peer_tls:
            return (
                f"{self.me}: {peer!r} at {address} speaks TLS, but this member runs with "
                f"--insecure-cleartext: {_MODE_HINT}"
            )
        return (
            f"{self.me}: {peer!r} at {address} speaks cleartext (it runs with --insecure-cleartext), "
            f"but this federation's links are TLS: {_MODE_HINT}"
        )

    def _impostor_line(self, peer: str, address: str, der: bytes | None) -> str:
        """Why the certificate presented as ``peer``'s is not: whose it is, who minted it, or nobody we know."""
        head = f"{self.me}: the party listening at {address} is not {peer!r}"
        if der is None:
            return f"{head}: it presented no certificate"
        other = next((r for r, d in self._ders.items() if d == der), None)
        if other is not None:
            return f"{head}: it presented member {other!r}'s own certificate (check the addresses in the federation file)"
        signer = signer_of(der, {m.role: m.certificate for m in self.fed.members})
        if signer == peer:
            return (
                f"{head}: it presented a certificate signed by {peer!r}'s key but not the one the "
                f"federation file pins (only that exact certificate identifies {peer!r})"
            )
        if signer is not None:
            return (
                f"{head}: it presented a certificate for {subject_of(der)!r} signed by member {signer!r}, "
                f"not {peer!r}'s own key (a member cannot vouch for another)"
            )
        return (
            f"{head}: its certificate is not the one the federation file pins (a key outside the federation)"
        )

    def _stranger(self, der: bytes | None) -> str:
        """What a listener refused: for its log (the dialler is told nothing)."""
        if der is None:
            return "no certificate"
        signer = signer_of(der, {m.role: m.certificate for m in self.fed.members})
        if signer is not None:
            return (
                f"a certificate for {subject_of(der)!r} signed by member {signer!r}, not a member's own "
                f"(a member cannot vouch for another)"
            )
        return "a key that is not in the federation"

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
        der: bytes | None = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _check_first_bytes(sock, tls=self.tls)
            stream = _TLSStream.wrap(sock, ctx, server=True)
            stream.wire_in += 0 if self.tls else len(_CLEAR_HELLO)  # read before the stream existed
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
        except _OtherMode as err:
            line = (
                f"{self.me}: a connection from {addr[0]}:{addr[1]} spoke TLS, but this member runs with "
                f"--insecure-cleartext: {_MODE_HINT}"
                if err.tls
                else f"{self.me}: a connection from {addr[0]}:{addr[1]} spoke cleartext (--insecure-cleartext), "
                f"but this federation's links are TLS: {_MODE_HINT}"
            )
            log.info("%s", line)  # info: on a TLS listener anyone who can connect could send it
            self._other_mode_seen = self._other_mode_seen or (time.monotonic(), line)
            _refuse(sock, _TLS_ONLY if self.tls else _CLEAR_HELLO)
            return
        except ssl.SSLCertVerificationError as err:
            log.info(
                "%s: refused a connection from %s:%s: its certificate is not a member's own (%s)",
                self.me, addr[0], addr[1], err.verify_message,
            )  # fmt: skip
            sock.close()
            return
        except (OSError, ssl.SSLError, ValueError) as err:
            log.info("%s: refused a connection from %s:%s (%s)", self.me, addr[0], addr[1], err)
            sock.close()
            return
        with self._lock:
            if peer not in self.peers or peer in self._in:
                why = "an unexpected member" if peer else self._stranger(der)
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
        """Deliver frames into the link's queues; on any failure, queue the error for every receiver."""
        head = bytearray(HEADER_BYTES)
        where = f"the link {link.peer} -> {self.me}"
        limit = self.fed.max_frame_bytes
        n: int | None = None
        try:
            while True:
                n = None
                if not link.stream.read_into(memoryview(head)):
                    raise _CleanClose
                channel, n = _HEADER.unpack(head)
                if channel >= N_CHANNELS:
                    raise _BadFrame(f"a frame for channel {channel}, which does not exist")
                if n > limit:
                    signed = f" ({n - (1 << 64)} as a signed length)" if n >= 1 << 63 else ""
                    raise _BadFrame(
                        f"a frame of {n} bytes{signed}, above the limit of {limit} (max_frame_bytes)"
                    )
                payload = _read_payload(link.stream, n)
                if channel == CONTROL and payload.startswith(_ABORT):
                    reason = payload[len(_ABORT) :].decode(errors="replace")
                    raise _PeerAborted(reason)
                link.queues[channel].put(payload)
        except _PeerAborted as err:
            error: PartyConnectionError = PartyConnectionError(f"{self.me}: {link.peer!r} stopped: {err}")
            if self._failure is None:
                self._failure = error
        except _BadFrame as err:
            error = PartyConnectionError(f"{self.me}: {link.peer!r} broke {where}: it announced {err}")
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
        except OSError as err:
            if self._closed:
                return
            error = PartyConnectionError(f"{self.me}: {link.peer!r} dropped out ({where} broke: {err})")
        except Exception as err:  # noqa: BLE001 - e.g. MemoryError: no receiver may wait out its timeout
            if self._closed:
                return
            what = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            frame = "a frame header" if n is None else f"a {n}-byte frame"
            error = PartyConnectionError(f"{self.me}: {where} failed reading {frame} ({what})")
            if self._failure is None:
                self._failure = error
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
        if n > self.fed.max_frame_bytes:
            raise PartyConnectionError(
                f"{self.me}: a {n}-byte message for {peer!r} is above the frame limit of "
                f"{self.fed.max_frame_bytes} bytes (max_frame_bytes); {peer!r} would refuse it"
            )
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


class _BadFrame(Exception):
    """A peer's frame header that no mpc_fl member sends (unknown channel, length above the limit)."""


def _read_payload(stream: _TLSStream, n: int) -> bytearray:
    """The next ``n`` plaintext bytes, allocated block by block as they arrive.

    Why: a peer's announced length then reserves no memory; only bytes it really sends do.
    """
    if n <= _ALLOC_BLOCK:
        payload = bytearray(n)
        if n and not stream.read_into(memoryview(payload)):
            raise ConnectionResetError("closed mid-message")
        return payload
    payload = bytearray()
    zeros = _zero_block()
    while len(payload) < n:
        start = len(payload)
        payload += zeros[: min(len(zeros), n - start)]
        with memoryview(payload) as view, view[start:] as block:
            if not stream.read_into(block):
                raise ConnectionResetError("closed mid-message")
    return payload


@functools.cache
def _zero_block() -> memoryview:
    """One block of zeros to grow payloads with (calloc'd: untouched pages cost no memory)."""
    return memoryview(bytes(_ALLOC_BLOCK))


def _read_hello_reply(stream: _TLSStream) -> None:
    """A cleartext dialler's check that the listener took it in (one byte, 0x01); else why not."""
    reply = bytearray(1)
    if not stream.read_into(memoryview(reply)):
        raise ConnectionResetError("no reply to hello")
    if reply[0] in (_TLS_RECORD_ALERT, _TLS_RECORD_HANDSHAKE):  # a TLS listener of any mpc_fl version
        raise _OtherMode(tls=True)
    if reply != b"\x01":
        rest = bytearray(len(_TLS_ONLY) - 1)
        with contextlib.suppress(OSError):
            stream.read_into(memoryview(rest))
        if _starts_like(bytes(reply + rest), _TLS_ONLY):
            raise _OtherMode(tls=True)
        raise ConnectionResetError(f"unexpected reply to hello ({bytes(reply + rest)[:16]!r})")


def _check_first_bytes(sock: socket.socket, *, tls: bool) -> None:
    """A listener's look at what a dialler sent first: raise :class:`_OtherMode` if it is the other mode.

    TLS: the first byte (peeked, left for the handshake) must start a TLS handshake record.
    Cleartext: the dialler's hello must start with :data:`_CLEAR_HELLO` (consumed here).
    """
    if tls:
        first = sock.recv(1, socket.MSG_PEEK)
        if not first:
            raise ConnectionResetError("closed before its hello")
        if first[0] == _TLS_RECORD_HANDSHAKE:
            return
        got = _recv_upto(sock, len(_CLEAR_HELLO))
        if _starts_like(got, _CLEAR_HELLO):
            raise _OtherMode(tls=False)
        raise ValueError(f"not a TLS hello ({got[:16]!r})")
    got = _recv_upto(sock, len(_CLEAR_HELLO))
    if got == _CLEAR_HELLO:
        return
    if got[:1] == bytes([_TLS_RECORD_HANDSHAKE]):
        raise _OtherMode(tls=True)
    raise ValueError(f"not an mpc_fl cleartext hello ({got[:16]!r})")


def _recv_upto(sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only if the peer closes or pauses past the socket's timeout."""
    got = b""
    with contextlib.suppress(TimeoutError):
        while len(got) < n:
            chunk = sock.recv(n - len(got))
            if not chunk:
                break
            got += chunk
    return got


def _refuse(sock: socket.socket, reply: bytes) -> None:
    """Tell a dialler of the other mode so (one line it recognises), then close gracefully.

    Graceful: what it still sends is read and dropped, so the close is a FIN, not a reset that
    could discard the reply before the dialler reads it.
    """
    with contextlib.suppress(OSError):
        sock.settimeout(1.0)
        sock.sendall(reply)
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and sock.recv(1 << 16):
            pass
    sock.close()
