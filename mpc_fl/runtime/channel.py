"""Message channels between parties: the only way a protocol talks to another party.

A protocol sees a :class:`Channel` and nothing else of the transport, so the same
protocol code runs over threads in one process (:class:`LocalChannel`, for unit
tests) and over authenticated, encrypted links between processes or hosts
(:class:`MeshChannel`). Every message is counted by the channel's ledger: one round
per send, and the bytes the transport really carries.

Payloads are bytes, numpy arrays (``.npy`` format, ``allow_pickle=False``) or
JSON: never pickle, so a peer cannot make another party execute code.
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

from mpc_fl.runtime.ledger import Ledger
from mpc_fl.runtime.mesh import APP, Mesh


class Channel(ABC):
    """Point-to-point, ordered, reliable messages between named parties."""

    def __init__(self, role: str, roles: tuple[str, ...], ledger: Ledger | None = None):
        if role not in roles:
            raise ValueError(f"role {role!r} is not one of the parties {roles}")
        self.role = role
        self.roles = roles
        self.ledger = ledger if ledger is not None else Ledger(party=role)

    @abstractmethod
    def _send(self, to: str, data: bytes) -> None: ...

    @abstractmethod
    def _recv(self, frm: str) -> bytes: ...

    def _check_peer(self, peer: str) -> None:
        if peer not in self.roles or peer == self.role:
            raise ValueError(f"{self.role!r} cannot talk to {peer!r}; parties are {self.roles}")

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with self.ledger.phase(name):
            yield

    def send_bytes(self, to: str, data: bytes) -> None:
        self._check_peer(to)
        self._send(to, data)
        self.ledger.record_round()

    def recv_bytes(self, frm: str) -> bytes:
        self._check_peer(frm)
        return self._recv(frm)

    def send_arrays(self, to: str, **arrays: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        self.send_bytes(to, buf.getvalue())

    def recv_arrays(self, frm: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self.recv_bytes(frm)), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def send_json(self, to: str, obj: Any) -> None:
        self.send_bytes(to, json.dumps(obj).encode())

    def recv_json(self, frm: str) -> Any:
        return json.loads(self.recv_bytes(frm).decode())

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
        boxes = {(a, b): queue.Queue() for a in roles for b in roles if a != b}
        return {r: cls(r, roles, boxes) for r in roles}

    def _send(self, to: str, data: bytes) -> None:
        self._boxes[(self.role, to)].put(bytes(data))
        self.ledger.record_send(len(data), rounds=0)  # in process: the payload is all that moves

    def _recv(self, frm: str) -> bytes:
        try:
            data = self._boxes[(frm, self.role)].get(timeout=600)
        except queue.Empty:
            raise TimeoutError(f"{self.role!r} got no message from {frm!r} in 600 s") from None
        self.ledger.record_recv(len(data))
        return data


class MeshChannel(Channel):
    """Channel over the member's authenticated, encrypted links (:class:`~mpc_fl.runtime.mesh.Mesh`).

    The mesh books the bytes that go on the wire (frame header and TLS records included).
    """

    def __init__(self, role: str, roles: tuple[str, ...], mesh: Mesh):
        super().__init__(role, roles, mesh.ledger)
        self.mesh = mesh

    def _send(self, to: str, data: bytes) -> None:
        self.mesh.send(to, APP, data)

    def _recv(self, frm: str) -> bytes:
        return bytes(self.mesh.recv(frm, APP))
