"""Progress lines on stderr while a party works: what is done, bytes so far, time left.

Why: training runs for minutes with nothing to show otherwise. Each party prints at most one
line every few seconds (and the last one of each task), prefixed with its role, so the
lines of several parties can share a terminal or be tailed from their logs by a launcher.
Quiet under ``--quiet``. The runtime knows nothing of models: protocols say what they count.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from mpc_fl.runtime.ledger import Ledger

#: Lines that start with this are progress lines (launchers relay them).
PREFIX = "progress "


class Progress:
    def __init__(
        self,
        role: str,
        ledger: Ledger,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        every_s: float = 2.0,
    ):
        self.role, self.ledger, self.enabled = role, ledger, enabled
        self.stream = stream or sys.stderr
        self.every_s = every_s

    def _emit(self, text: str) -> None:
        if self.enabled:
            sent = self.ledger.total().bytes_sent / 1e6
            print(f"{PREFIX}[{self.role}] {text}, {sent:,.1f} MB sent", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A stage starts (alignment, set-up, scoring)."""
        self._emit(text)

    @contextlib.contextmanager
    def task(self, what: str, total: int, unit: str) -> Iterator[Callable[[], None]]:
        """Count ``total`` units of work; call the yielded function once per unit done."""
        start = last = time.perf_counter()
        done = 0

        def line(now: float) -> str:
            elapsed = now - start
            eta = elapsed / done * (total - done) if done else float("nan")
            left = f", ETA {eta:.0f} s" if done < total and done else ""
            return f"{what}: {unit} {done}/{total} ({100 * done / max(total, 1):.0f}%), {elapsed:.0f} s{left}"

        def tick() -> None:
            nonlocal done, last
            done += 1
            now = time.perf_counter()
            if now - last >= self.every_s and done < total:
                last = now
                self._emit(line(now))

        yield tick
        self._emit(line(time.perf_counter()))
