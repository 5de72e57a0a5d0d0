"""A machine in the middle: relays TCP between members, keeps a copy of every byte, may flip one.

It plays the network attacker of the security review (F3): everything between two parties
passes through it, so it sees exactly what a wiretap would see and can alter a byte in flight.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Forwarder:
    """Listen on ``port`` (127.0.0.1) and relay every connection to ``target`` port."""

    target: int
    #: flip one bit of the byte at this offset of the client-to-server stream of one connection
    flip_at: int | None = None
    port: int = 0
    captured: list[bytearray] = field(default_factory=list)
    flipped: bool = False

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            for src, dst, forward in ((client, server, True), (server, client, False)):
                buf = bytearray()
                with self._lock:
                    self.captured.append(buf)
                threading.Thread(target=self._pump, args=(src, dst, buf, forward), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, buf: bytearray, forward: bool) -> None:
        try:
            while chunk := src.recv(1 << 16):
                chunk = bytearray(chunk)
                start = len(buf)
                buf += chunk
                with self._lock:
                    flip = (
                        forward
                        and self.flip_at is not None
                        and not self.flipped
                        and start <= self.flip_at < len(buf)
                    )
                    if flip:
                        self.flipped = True
                if flip:
                    chunk[self.flip_at - start] ^= 0x01
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def seen(self) -> bytes:
        with self._lock:
            return b"".join(bytes(b) for b in self.captured)

    def close(self) -> None:
        self._listener.close()
