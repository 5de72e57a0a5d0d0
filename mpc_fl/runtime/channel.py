"""Message channels between parties: the only way a protocol talks to another party.

A protocol sees a :class:`Channel` and nothing else of the transport, so the same
protocol code runs over threads in one process (:class:`LocalChannel`, for unit
tests) and over authenticated, encrypted links between processes or hosts
(:class:`MeshChannel`). Every message is counted by the channel's ledger: one round
per send, and the bytes the transport really carries.

Payloads are bytes, numpy arrays (``.npy`` format, ``allow_pickle=False``) or
JSON: never pickle, so a peer cannot make another party execute code.

Every message is typed: a short header names its kind (bytes, arrays, JSON) and the phase
the sender was in (``alignment``, ``setup``, ``training``...). A receiver that expects
something else fails with :class:`~mpc_fl.runtime.errors.ProtocolMismatchError` naming both
phases and the link, never with a decode error deep in a protocol: a late message of a
finished phase cannot pass for the next phase's. Traffic that is not a protocol's own
(a library's connections carried by :class:`~mpc_fl.runtime.tunnel.Tunnel`) goes on a
stream of its own (:data:`TUNNEL`), so it cannot be read by a protocol at all.
"""

from __future__ import annotations

import io
import json
import queue
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mpc_fl.runtime.errors import PartyConnectionError, ProtocolMismatchError
from mpc_fl.runtime.ledger import Ledger
from mpc_fl.runtime.mesh import APP, TUNNEL, Mesh

__all__ = ["APP", "TUNNEL", "Channel", "LocalChannel", "MeshChannel", "payload_of"]

#: Message kinds, as the header's first byte.
_KINDS = {b"B"[0]: "bytes", b"A"[0]: "arrays", b"J"[0]: "json"}
_KIND_BYTE = {name: bytes([code]) for code, name in _KINDS.items()}
_MESSAGE = {"bytes": "a bytes message", "arrays": "an arrays message", "json": "a JSON message"}


def _header(kind: str, phase: str) -> bytes:
    tag = phase.encode()[:255]
    return _KIND_BYTE[kind] + bytes([len(tag)]) + tag


def payload_of(message: bytes) -> bytes:
    """A protocol message as the transport carries it, without its typed header (for tests that spy)."""
    return bytes(message[2 + message[1] :]) if len(message) >= 2 and message[0] in _KINDS else bytes(message)


class Channel(ABC):
    """Point-to-point, ordered, reliable messages between named parties."""

    def __init__(self, role: str, roles: tuple[str, ...], ledger: Ledger | None = None):
        if role not in roles:
            raise ValueError(f"role {role!r} is not one of the parties {roles}")
        self.role = role
        self.roles = roles
        self.ledger = ledger if ledger is not None else Ledger(party=role)
        self._tunnels_opened: dict[str, int] = {}

    @abstractmethod
    def _send(self, to: str, data: bytes, stream: int) -> None: ...

    @abstractmethod
    def _recv(self, frm: str, stream: int, timeout_s: float | None) -> bytes: ...

    @property
    def broken(self) -> PartyConnectionError | None:
        """Why the transport is down (a link failed or a peer left), or None while it is up.

        Why: a party that waits for something other than a message (the bank's service, idle
        between queries) can notice a dead link and end its session without a receive.
        """
        return None

    def _check_peer(self, peer: str) -> None:
        if peer not in self.roles or peer == self.role:
            raise ValueError(f"{self.role!r} cannot talk to {peer!r}; parties are {self.roles}")

    def next_tunnel_number(self, peer: str) -> int:
        """Number a new tunnel to ``peer``: both parties open tunnels in the same order, so they agree."""
        number = self._tunnels_opened.get(peer, 0)
        self._tunnels_opened[peer] = number + 1
        return number

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with self.ledger.phase(name):
            yield

    def send_bytes(self, to: str, data: bytes, *, stream: int = APP, kind: str = "bytes") -> None:
        self._check_peer(to)
        self._send(to, _header(kind, self.ledger.phase_name) + data, stream)
        self.ledger.record_round()

    def recv_bytes(
        self, frm: str, *, stream: int = APP, kind: str = "bytes", timeout_s: float | None = None
    ) -> bytes:
        """The next message from ``frm``; it must be of ``kind`` and sent in this party's current phase.

        ``timeout_s``: how long to wait (:class:`TimeoutError` after that, or a
        :class:`~mpc_fl.runtime.errors.PartyConnectionError` on a mesh); None: the transport's
        default (600 s in process, the federation's ``op_timeout_s`` on a mesh).
        """
        self._check_peer(frm)
        return self._unwrap(frm, self._recv(frm, stream, timeout_s), kind)

    def _unwrap(self, frm: str, data: bytes, kind: str) -> bytes:
        phase = self.ledger.phase_name
        where = f"on the link {frm} -> {self.role}, in phase {phase!r}"
        if len(data) < 2 or data[0] not in _KINDS or len(data) < 2 + data[1]:
            raise ProtocolMismatchError(
                f"{self.role}: expected {_MESSAGE[kind]} from {frm!r} {where}, got {len(data)} bytes "
                f"that are not a protocol message (a peer of another version?)"
            )
        got_kind, n = _KINDS[data[0]], data[1]
        got_phase = bytes(data[2 : 2 + n]).decode(errors="replace")
        if got_kind != kind or got_phase != phase:
            raise ProtocolMismatchError(
                f"{self.role}: expected {_MESSAGE[kind]} from {frm!r} {where}, got {_MESSAGE[got_kind]} "
                f"of phase {got_phase!r}: the parties are out of step"
            )
        return data[2 + n :]

    def send_arrays(self, to: str, **arrays: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        self.send_bytes(to, buf.getvalue(), kind="arrays")

    def recv_arrays(self, frm: str, *, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        data = self.recv_bytes(frm, kind="arrays", timeout_s=timeout_s)
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def send_json(self, to: str, obj: Any) -> None:
        self.send_bytes(to, json.dumps(obj).encode(), kind="json")

    def recv_json(self, frm: str, *, timeout_s: float | None = None) -> Any:
        return json.loads(self.recv_bytes(frm, kind="json", timeout_s=timeout_s).decode())

    def exchange_json(self, peer: str, obj: Any) -> Any:
        """Send ``obj`` to ``peer`` and return the peer's; the role that sorts first sends first.

        Why the order: both sides call this symmetrically, and on a transport whose send blocks
        until the peer receives, two parties that both sent first would deadlock.
        """
        if self.role < peer:
            self.send_json(peer, obj)
            return self.recv_json(peer)
        got = self.recv_json(peer)
        self.send_json(peer, obj)
        return got


class LocalChannel(Channel):
    """In-process channel over queues, for running all parties as threads in tests."""

    def __init__(self, role: str, roles: tuple[str, ...], boxes: dict[tuple[str, str], queue.Queue]):
        super().__init__(role, roles)
        self._boxes = boxes

    @classmethod
    def create(cls, roles: tuple[str, ...]) -> dict[str, LocalChannel]:
        boxes = {(a, b, s): queue.Queue() for a in roles for b in roles if a != b for s in (APP, TUNNEL)}
        return {r: cls(r, roles, boxes) for r in roles}

    def _send(self, to: str, data: bytes, stream: int) -> None:
        self._boxes[(self.role, to, stream)].put(bytes(data))
        self.ledger.record_send(len(data), rounds=0)  # in process: the payload is all that moves

    def _recv(self, frm: str, stream: int, timeout_s: float | None) -> bytes:
        timeout_s = 600.0 if timeout_s is None else timeout_s
        try:
            data = self._boxes[(frm, self.role, stream)].get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"{self.role!r} got no message from {frm!r} in {timeout_s:.0f} s") from None
        self.ledger.record_recv(len(data))
        return data


class MeshChannel(Channel):
    """Channel over the member's authenticated, encrypted links (:class:`~mpc_fl.runtime.mesh.Mesh`).

    The mesh books the bytes that go on the wire (frame header and TLS records included).
    """

    def __init__(self, role: str, roles: tuple[str, ...], mesh: Mesh):
        super().__init__(role, roles, mesh.ledger)
        self.mesh = mesh

    def _send(self, to: str, data: bytes, stream: int) -> None:
        self.mesh.send(to, stream, data)

    def _recv(self, frm: str, stream: int, timeout_s: float | None) -> bytes:
        return bytes(self.mesh.recv(frm, stream, timeout_s=timeout_s))

    @property
    def broken(self) -> PartyConnectionError | None:
        """The mesh's error once a link failed or a peer left (:attr:`Mesh.broken`), else None."""
        return self.mesh.broken
