"""Run every party (and the dealer) as separate local processes, for tests and experiments.

Each party is a forked OS process that joins the federation over TCP exactly as it
would from another host; only the launch is local. If a party dies or hangs, the
others are stopped and the error names it: never a silent hang.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpc_fl.runtime.channel import Channel, LocalChannel
from mpc_fl.runtime.federation import free_port, local_federation
from mpc_fl.runtime.progress import Progress
from mpc_fl.runtime.session import DEALER, Federation, PartySession, connect, serve_dealer

__all__ = ["PartyFailed", "describe_failures", "free_port", "run_in_threads", "run_local"]


class PartyFailed(RuntimeError):
    """A party process failed; the message names the party and its error."""


def describe_failures(errors: dict[str, str]) -> str:
    """Name the party that failed first: one whose peers merely saw it drop out is secondary."""
    secondary = [
        n for n, e in errors.items() if any(m in e for m in ("dropped out", "closed its link", " stopped: "))
    ]
    primary = [n for n in errors if n not in secondary] or list(errors)
    first = primary[0]
    lines = [f"party {first!r} failed: {errors[first].strip().splitlines()[0]}"]
    lines += [f"then {n!r}: {errors[n].strip().splitlines()[0]}" for n in errors if n != first]
    return "\n".join(lines)


def _party_main(
    fed: Federation,
    role: str,
    key: Path,
    listen: tuple | None,
    fn: Callable,
    uses_crypten: bool,
    out: mp.Queue,
) -> None:
    try:
        if role == DEALER:
            serve_dealer(fed, key, listen=listen)
            out.put((role, "ok", None))
            return
        with connect(fed, role, key, uses_crypten=uses_crypten, listen=listen) as session:
            result = fn(session)
            ledger = session.channel.ledger
        out.put((role, "ok", {"result": result, "ledger": ledger.to_dict()}))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises
        out.put((role, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}"))
        raise SystemExit(1) from None


def run_local(
    fn: Callable[[PartySession], Any],
    roles: tuple[str, ...] = ("bank", "provider"),
    *,
    uses_crypten: bool = True,
    dealer: bool = True,
    timeout_s: float = 900.0,
    federation: tuple[Federation, dict[str, Path]] | None = None,
    listen: dict[str, tuple[str, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``fn(session)`` in one process per party; return ``{role: {"result", "ledger"}}``.

    Each member gets a fresh key pair and its own port on 127.0.0.1 unless ``federation``
    (a federation and each member's key file) is given; ``listen`` overrides where a member
    listens (e.g. behind a relay that the federation file points to). ``fn`` must be a
    module-level function or a closure (processes are forked).
    """
    with tempfile.TemporaryDirectory(prefix="mpc_fl-keys-") as key_dir:
        if federation is None:
            federation = local_federation(roles, Path(key_dir), dealer=dealer and uses_crypten)
        fed, keys = federation
        return _run_processes(fn, fed, keys, listen or {}, uses_crypten, timeout_s)


def _run_processes(
    fn: Callable, fed: Federation, keys: dict[str, Path], listen: dict, uses_crypten: bool, timeout_s: float
) -> dict[str, dict[str, Any]]:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    if not uses_crypten:
        fed = fed.without_dealer()
    names = [m.role for m in fed.members]
    procs = {
        n: ctx.Process(
            target=_party_main, args=(fed, n, keys[n], listen.get(n), fn, uses_crypten, out), name=n
        )
        for n in names
    }
    for p in procs.values():
        p.start()
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    pending = set(names)
    deadline = time.monotonic() + timeout_s
    try:
        while pending and not errors:
            try:
                role, status, payload = out.get(timeout=0.5)
            except Exception:  # queue.Empty
                for n in [
                    n for n in pending if not procs[n].is_alive() and procs[n].exitcode not in (0, None)
                ]:
                    errors[n] = f"exited with code {procs[n].exitcode}"
                if not errors and time.monotonic() > deadline:
                    raise PartyFailed(
                        f"parties {sorted(pending)} did not finish within {timeout_s:.0f} s"
                    ) from None
                continue
            pending.discard(role)
            if status == "error":
                errors[role] = payload
            elif role != DEALER:
                results[role] = payload
        if errors:
            time.sleep(1.0)  # let the other parties notice, then blame the one that failed first
            while True:  # a party's own account of its failure beats "exited with code 1"
                try:
                    role, status, payload = out.get(timeout=0.2)
                except Exception:  # queue.Empty
                    break
                if status == "error":
                    errors[role] = payload
            for n in pending:
                if not procs[n].is_alive() and procs[n].exitcode not in (0, None):
                    errors.setdefault(n, f"exited with code {procs[n].exitcode}")
            raise PartyFailed(describe_failures(errors))
    finally:
        for p in procs.values():
            p.join(timeout=5 if not pending else 0.5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
    return results


@dataclass
class ThreadContext:
    """What a protocol sees of a party when all parties run as threads of one process."""

    role: str
    roles: tuple[str, ...]
    channel: Channel

    @property
    def rank(self) -> int:
        """This party's index in ``roles`` (the bank is 0), as :class:`mpc_fl.protocols.base.Context` asks."""
        return self.roles.index(self.role)

    @property
    def progress(self) -> Progress:
        return Progress(self.role, self.channel.ledger, enabled=False)


def run_in_threads(
    fn: Callable[[ThreadContext], Any], roles: tuple[str, ...], timeout_s: float = 300.0
) -> dict:
    """Run ``fn(ctx)`` per role in threads over :class:`LocalChannel`: ``{role: (result, ledger)}``.

    For protocols that need no CrypTen (Paillier, PSI, plaintext): fast unit tests of the
    protocol logic without processes. The first error of any party is re-raised.
    """
    chans = LocalChannel.create(roles)
    out: dict[str, Any] = {}

    def target(role: str) -> None:
        try:
            out[role] = fn(ThreadContext(role, roles, chans[role]))
        except BaseException as err:  # noqa: BLE001 - re-raised below
            out[role] = err

    threads = {r: threading.Thread(target=target, args=(r,), daemon=True) for r in roles}
    for t in threads.values():
        t.start()
    deadline = time.monotonic() + timeout_s
    while any(t.is_alive() for t in threads.values()) and time.monotonic() < deadline:
        if any(isinstance(v, BaseException) for v in list(out.values())):
            break  # the first failure ends the run: its peers would only wait for it
        time.sleep(0.01)
    for r in roles:
        if isinstance(out.get(r), BaseException):
            raise out[r]
    for r in roles:
        if r not in out:
            raise PartyFailed(f"party {r!r} did not finish within {timeout_s:.0f} s")
    return {r: (out[r], chans[r].ledger) for r in roles}
