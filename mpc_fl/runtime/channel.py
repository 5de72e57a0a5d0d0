"""Message channels between parties: the only way a protocol talks to another party.

A protocol sees a :class:`Channel` and nothing else of the transport, so the same
protocol code runs over threads in one process (:class:`LocalChannel`, for unit
tests) and over torch.distributed between processes or hosts
(:class:`TorchChannel`). Every payload is counted by the channel's ledger.

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
        self.ledger.record_send(len(data))

    def recv_bytes(self, frm: str) -> bytes:
        self._check_peer(frm)
        data = self._recv(frm)
        self.ledger.record_recv(len(data))
        return data

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

    def _recv(self, frm: str) -> bytes:
        try:
            return self._boxes[(frm, self.role)].get(timeout=600)
        except queue.Empty:
            raise TimeoutError(f"{self.role!r} got no message from {frm!r} in 600 s") from None


class TorchChannel(Channel):
    """Channel over torch.distributed point-to-point messages (gloo, TCP).

    Each message is a length header (8 bytes, counted) followed by the payload.
    """

    HEADER_BYTES = 8

    def __init__(
        self, role: str, roles: tuple[str, ...], ranks: dict[str, int], ledger: Ledger | None = None
    ):
        super().__init__(role, roles, ledger)
        self._ranks = ranks
        self._in_flight: list = []  # (work, buffer): sends are asynchronous, like a socket's

    def _send(self, to: str, data: bytes) -> None:
        import torch
        import torch.distributed as dist

        # Asynchronous, so two parties may send to each other at the same time without deadlock.
        self._in_flight = [(w, b) for w, b in self._in_flight if not w.is_completed()]
        dst = self._ranks[to]
        header = torch.tensor([len(data)], dtype=torch.int64)
        self._in_flight.append((dist.isend(header, dst=dst), header))
        if data:
            payload = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            self._in_flight.append((dist.isend(payload, dst=dst), payload))

    def drain(self) -> None:
        """Wait until every message sent so far has left (call before shutting down)."""
        for work, _ in self._in_flight:
            work.wait()
        self._in_flight = []

    def _recv(self, frm: str) -> bytes:
        import torch
        import torch.distributed as dist

        src = self._ranks[frm]
        header = torch.empty(1, dtype=torch.int64)
        dist.recv(header, src=src)
        n = int(header.item())
        if n == 0:
            return b""
        payload = torch.empty(n, dtype=torch.uint8)
        dist.recv(payload, src=src)
        return payload.numpy().tobytes()

    def send_bytes(self, to: str, data: bytes) -> None:
        super().send_bytes(to, data)
        self.ledger.by_phase[self.ledger.phase_name].bytes_sent += self.HEADER_BYTES

    def recv_bytes(self, frm: str) -> bytes:
        data = super().recv_bytes(frm)
        self.ledger.by_phase[self.ledger.phase_name].bytes_recv += self.HEADER_BYTES
        return data
