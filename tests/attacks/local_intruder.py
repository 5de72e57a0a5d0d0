"""A local intruder: another process on a party's machine that pushes into the PSI library's link.

It plays the local attacker of security item 1 ("the PSI library is reachable without a key").
Forked from the test, optionally as another user (uid nobody), it polls ``/proc/net/unix``
(readable by every user, and it lists every bound socket path) for the sockets of a PSI run,
connects to each as soon as it appears and sends brpc ``Push`` requests claiming each party's
rank, as the library's own peer would. It reports, per socket path, what it got: refused by
the kernel, gone, or connected and the libraries' replies.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

NOBODY = 65534
_SERVICE = b"org.interconnection.link.ReceiverService"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    """One protobuf field: a varint, or length-delimited bytes."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _fields(data: bytes) -> dict[int, int | bytes]:
    """Top-level protobuf fields (last one wins): enough to read a brpc reply."""
    out: dict[int, int | bytes] = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        if key & 7 == 0:
            out[key >> 3], i = _read_varint(data, i)
        elif key & 7 == 2:
            n, i = _read_varint(data, i)
            out[key >> 3], i = data[i : i + n], i + n
        else:
            return out
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[i]
        n |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if b < 0x80:
            return n, i


def push_request(correlation_id: int, sender_rank: int) -> bytes:
    """A brpc (baidu_std) ``ReceiverService.Push`` as yacl's link sends it, claiming ``sender_rank``."""
    meta = _field(1, _field(1, _SERVICE) + _field(2, b"Push")) + _field(4, correlation_id)
    body = _field(1, sender_rank) + _field(2, b"mpc_fl-intruder") + _field(3, b"\x00" * 16)
    return b"PRPC" + struct.pack(">II", len(meta) + len(body), len(meta)) + meta + body


def read_replies(sock: socket.socket, n: int, timeout_s: float) -> list[dict]:
    """Up to ``n`` brpc replies: correlation id, RPC error code, and the Push's own error code."""
    sock.settimeout(timeout_s)
    buf = b""
    replies: list[dict] = []
    try:
        while len(replies) < n:
            while len(buf) < 12 or len(buf) < 12 + struct.unpack(">I", buf[4:8])[0]:
                data = sock.recv(65536)
                if not data:
                    return replies
                buf += data
            body_size, meta_size = struct.unpack(">II", buf[4:12])
            meta = _fields(buf[12 : 12 + meta_size])
            payload = buf[12 + meta_size : 12 + body_size]
            buf = buf[12 + body_size :]
            response = _fields(meta.get(2, b""))  # type: ignore[arg-type]
            header = _fields(_fields(payload).get(1, b""))  # type: ignore[arg-type]
            replies.append(
                {
                    "correlation_id": meta.get(4),
                    "rpc_error": response.get(1, 0),
                    "push_error": header.get(1, 0),
                }
            )
    except OSError:
        pass
    return replies


@dataclass
class Outcome:
    """What the intruder got from one socket path."""

    denied: int = 0  # connect refused by the kernel for lack of permission
    gone: bool = False  # the path disappeared before it got in
    connected: bool = False
    replies: list[dict] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """A library took one of its Pushes (an RPC reply with no error)."""
        return any(r["rpc_error"] == 0 and r["push_error"] == 0 for r in self.replies)


def _listening_paths(pattern: str, only: str) -> set[str]:
    with open("/proc/net/unix") as fh:
        next(fh)
        paths = {p[7] for p in (line.split() for line in fh) if len(p) >= 8}
    return {p for p in paths if pattern in p and p.endswith(".sock") and os.path.basename(p).startswith(only)}


def _attack_path(path: str, out: Outcome, stop: threading.Event) -> None:
    while not stop.is_set():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except PermissionError:
            out.denied += 1
            sock.close()
            time.sleep(0.001)
            continue
        except (FileNotFoundError, ConnectionRefusedError):
            out.gone = True
            sock.close()
            return
        out.connected = True
        with sock:
            sock.sendall(push_request(1, 0) + push_request(2, 1))  # claim either party's rank
            out.replies = read_replies(sock, 2, timeout_s=5.0)
        return


def _intrude(pattern: str, only: str, stop_fd: int, report_fd: int, deadline_s: float) -> None:
    """The child's work: poll, attack every new path in its own thread, report as JSON."""
    outcomes: dict[str, Outcome] = {}
    stop = threading.Event()
    threads = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for path in _listening_paths(pattern, only) - outcomes.keys():
            outcomes[path] = Outcome()
            t = threading.Thread(target=_attack_path, args=(path, outcomes[path], stop), daemon=True)
            t.start()
            threads.append(t)
        if select.select([stop_fd], [], [], 0.001)[0]:
            break  # the test is done
    stop.set()
    for t in threads:
        t.join(timeout=6)
    report = {p: {**o.__dict__, "accepted": o.accepted} for p, o in outcomes.items()}
    data = json.dumps(report).encode()
    while data:
        data = data[os.write(report_fd, data) :]


class Intruder:
    """Fork the intruder (as ``uid``, or as this user if None); :meth:`report` stops it and reads it.

    ``pattern``: what a socket path must contain to be attacked (the test's own runs only, as
    other PSI runs may share the machine); ``only``: how the socket's file name must start.
    """

    def __init__(self, pattern: str, uid: int | None = NOBODY, only: str = "", deadline_s: float = 120.0):
        stop_r, self._stop_w = os.pipe()
        self._report_r, report_w = os.pipe()
        self.uid = os.geteuid() if uid is None else uid
        self.pid = os.fork()
        if self.pid == 0:  # the child: drop to the intruder's user, attack, report, exit
            code = 1
            try:
                os.close(self._stop_w)
                os.close(self._report_r)
                if uid is not None:
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                _intrude(pattern, only, stop_r, report_w, deadline_s)
                code = 0
            finally:
                os._exit(code)
        os.close(stop_r)
        os.close(report_w)

    def report(self) -> dict[str, Outcome]:
        """Stop the intruder and return what it got, per socket path."""
        os.write(self._stop_w, b"x")  # not just a close: forked party processes hold this end too
        os.close(self._stop_w)
        chunks = []
        while chunk := os.read(self._report_r, 65536):
            chunks.append(chunk)
        os.close(self._report_r)
        _, status = os.waitpid(self.pid, 0)
        if status != 0:
            raise RuntimeError(f"the intruder process failed (wait status {status})")
        raw = json.loads(b"".join(chunks))
        return {p: Outcome(o["denied"], o["gone"], o["connected"], o["replies"]) for p, o in raw.items()}
