"""One communication ledger for every protocol: bytes and messages per party, phase and peer.

Why one ledger: protocols are only comparable if their traffic is counted the same
way. Every byte a protocol puts on the transport goes through :class:`Ledger`,
either directly (the byte channel counts its payloads) or from CrypTen's own
communicator statistics (``record_crypten``), which count 8 bytes per ring
element exchanged.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

PHASES = ("setup", "training", "scoring")


@dataclass
class Traffic:
    """Traffic of one party in one phase."""

    bytes_sent: int = 0
    bytes_recv: int = 0
    messages_sent: int = 0
    rounds: int = 0
    wall_s: float = 0.0

    def add(self, other: Traffic) -> None:
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
    #: Cumulative (bytes, rounds) of an outside counter (CrypTen's communicator), or None.
    meter: Callable[[], tuple[int, int]] | None = None
    _last_meter: tuple[int, int] = (0, 0)
    _last_clock: float = field(default_factory=time.perf_counter)

    def attach_meter(self, meter: Callable[[], tuple[int, int]]) -> None:
        """Also count the traffic an outside communicator reports (CrypTen's statistics)."""
        self.flush()
        self.meter = meter
        self._last_meter = meter()

    def flush(self) -> None:
        """Book time and outside traffic since the last flush to the current phase."""
        now = time.perf_counter()
        self._current().wall_s += now - self._last_clock
        self._last_clock = now
        if self.meter is not None:
            current = self.meter()
            d_bytes, d_rounds = current[0] - self._last_meter[0], current[1] - self._last_meter[1]
            self._last_meter = current
            if d_bytes or d_rounds:
                self.record_crypten(d_bytes, d_rounds)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute all traffic and time inside the block to phase ``name`` (exclusive of nested phases)."""
        self.flush()
        previous, self.phase_name = self.phase_name, name
        try:
            yield
        finally:
            self.flush()
            self.phase_name = previous

    def _current(self) -> Traffic:
        return self.by_phase.setdefault(self.phase_name, Traffic())

    def record_send(self, n_bytes: int) -> None:
        t = self._current()
        t.bytes_sent += n_bytes
        t.messages_sent += 1
        t.rounds += 1

    def record_recv(self, n_bytes: int) -> None:
        self._current().bytes_recv += n_bytes

    def record_crypten(self, stat_bytes: int, stat_rounds: int) -> None:
        """Add a delta of CrypTen's communicator statistics.

        CrypTen counts, per party, 8 bytes per element sent *and* received by a
        collective (an all-reduce counts twice). With 2 computing parties that is
        exactly sent + received; with more it is split evenly, an approximation.
        """
        t = self._current()
        half = stat_bytes // 2
        t.bytes_sent += half
        t.bytes_recv += stat_bytes - half
        t.rounds += stat_rounds
        t.messages_sent += stat_rounds

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
            "total": asdict(self.total()),
        }

    @staticmethod
    def merge(ledgers: list[dict]) -> dict:
        """Sum several parties' ``to_dict()`` outputs into per-phase totals over all parties."""
        phases: dict[str, Traffic] = {}
        for led in ledgers:
            for name, t in led["by_phase"].items():
                phases.setdefault(name, Traffic()).add(Traffic(**t))
        total = Traffic()
        for t in phases.values():
            total.add(t)
        return {"by_phase": {k: asdict(v) for k, v in phases.items()}, "total": asdict(total)}
