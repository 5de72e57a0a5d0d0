"""One communication ledger for every protocol: bytes and messages per party, phase and peer.

Why one ledger: protocols are only comparable if their traffic is counted the same
way. Every byte a party puts on the wire goes through :class:`Ledger`: the link
layer (:mod:`mpc_fl.runtime.mesh`) books each message's bytes as they go on the wire
(frame header and TLS records included), whether the message is a protocol's or
CrypTen's (:mod:`mpc_fl.runtime.crypten_comm`), and callers book one round per
communication call. A test checks the ledger against the kernel's TCP counters.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

PHASES = ("connect", "alignment", "setup", "training", "scoring")


@dataclass
class Traffic:
    """Traffic of one party in one phase."""

    bytes_sent: int = 0
    bytes_recv: int = 0
    messages_sent: int = 0
    rounds: int = 0
    wall_s: float = 0.0
    #: part of bytes_sent + bytes_recv exchanged with the triple dealer (not with another party)
    dealer_bytes: int = 0

    def add(self, other: Traffic) -> None:
        self.dealer_bytes += other.dealer_bytes
        self.bytes_sent += other.bytes_sent
        self.bytes_recv += other.bytes_recv
        self.messages_sent += other.messages_sent
        self.rounds += other.rounds
        self.wall_s += other.wall_s


@dataclass
class Ledger:
    """Counts one party's traffic, split by phase (``setup``, ``training``, ``scoring``...).

    ``rounds`` counts communication calls (a send, a collective), as CrypTen does;
    it is an upper bound on the protocol's round depth, not the depth itself.
    """

    party: str = ""
    phase_name: str = "setup"
    by_phase: dict[str, Traffic] = field(default_factory=dict)
    #: The same traffic again, by ``"phase/step"`` for the blocks a protocol labels with :meth:`step`.
    by_step: dict[str, Traffic] = field(default_factory=dict)
    step_name: str | None = None
    _last_clock: float = field(default_factory=time.perf_counter)

    def flush(self) -> None:
        """Book the time since the last flush to the current phase (and step)."""
        now = time.perf_counter()
        for t in self._targets():
            t.wall_s += now - self._last_clock
        self._last_clock = now

    @contextlib.contextmanager
    def _label(self, attr: str, name: str | None) -> Iterator[None]:
        self.flush()
        previous = getattr(self, attr)
        setattr(self, attr, name)
        try:
            yield
        finally:
            self.flush()
            setattr(self, attr, previous)

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Attribute all traffic and time inside the block to phase ``name`` (exclusive of nested phases)."""
        return self._label("phase_name", name)

    def step(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Also book the block's traffic and time to ``"<phase>/<name>"`` (phase totals are unchanged).

        Why a second label and not a nested phase: readers of ``by_phase`` keep their totals,
        while a protocol can show where inside a phase its bytes and rounds go.
        """
        return self._label("step_name", name)

    def _current(self) -> Traffic:
        return self.by_phase.setdefault(self.phase_name, Traffic())

    def _targets(self) -> list[Traffic]:
        if self.step_name is None:
            return [self._current()]
        return [self._current(), self.by_step.setdefault(f"{self.phase_name}/{self.step_name}", Traffic())]

    def record_send(self, n_bytes: int, *, dealer: bool = False, rounds: int = 1) -> None:
        for t in self._targets():
            t.bytes_sent += n_bytes
            t.messages_sent += 1
            t.rounds += rounds
            if dealer:
                t.dealer_bytes += n_bytes

    def record_recv(self, n_bytes: int, *, dealer: bool = False) -> None:
        for t in self._targets():
            t.bytes_recv += n_bytes
            if dealer:
                t.dealer_bytes += n_bytes

    def record_round(self) -> None:
        """A collective call (all-reduce, barrier...) counted once per party."""
        for t in self._targets():
            t.rounds += 1

    def total(self) -> Traffic:
        out = Traffic()
        for t in self.by_phase.values():
            out.add(t)
        return out

    def to_dict(self) -> dict:
        self.flush()
        return {
            "party": self.party,
            "by_phase": {k: asdict(v) for k, v in self.by_phase.items()},
            "by_step": {k: asdict(v) for k, v in self.by_step.items()},
            "total": asdict(self.total()),
        }

    @staticmethod
    def merge(ledgers: list[dict]) -> dict:
        """Sum several parties' ``to_dict()`` outputs into per-phase totals over all parties."""
        phases: dict[str, Traffic] = {}
        steps: dict[str, Traffic] = {}
        for led in ledgers:
            for name, t in led["by_phase"].items():
                phases.setdefault(name, Traffic()).add(Traffic(**t))
            for name, t in led.get("by_step", {}).items():
                steps.setdefault(name, Traffic()).add(Traffic(**t))
        total = Traffic()
        for t in phases.values():
            total.add(t)
        return {
            "by_phase": {k: asdict(v) for k, v in phases.items()},
            "by_step": {k: asdict(v) for k, v in steps.items()},
            "total": asdict(total),
        }
