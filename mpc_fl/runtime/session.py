"""Joining a federation: authenticated, encrypted links to every peer, then CrypTen on top.

Each party is its own OS process; it reads the federation file (public: members,
addresses, certificates) and its own key file, listens on its own address and dials
its peers (:mod:`mpc_fl.runtime.mesh`), so the same command runs parties on one
machine or on several hosts. Ranks: computing parties are 0..n-1 in the file's order
(the bank is rank 0, CrypTen's party 0); the Beaver-triple dealer, when there is one,
is rank n.

A party that never connects is named after the connect timeout, counted from the start
of the process; a party that dies mid-run makes its peers' next receive fail, naming it.
This module knows nothing of models or protocols.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mpc_fl.runtime.channel import MeshChannel
from mpc_fl.runtime.errors import PartyConnectionError
from mpc_fl.runtime.federation import DEALER, Federation
from mpc_fl.runtime.ledger import Ledger
from mpc_fl.runtime.mesh import Mesh

__all__ = ["DEALER", "Federation", "PartyConnectionError", "PartySession", "connect", "serve_dealer"]


def process_age_s() -> float:
    """Seconds since this process started (Linux), so timeouts count from launch, not from imports."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        import os

        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def connect_deadline(fed: Federation) -> float:
    """The monotonic time by which every peer must be connected."""
    return time.monotonic() - process_age_s() + fed.connect_timeout_s


@dataclass
class PartySession:
    """What a computing party gets once connected: its channel (with ledger) and the federation."""

    fed: Federation
    role: str
    channel: MeshChannel
    uses_crypten: bool

    @property
    def rank(self) -> int:
        return self.fed.rank_of(self.role)

    @property
    def roles(self) -> tuple[str, ...]:
        return self.fed.roles


def _mesh(fed: Federation, me: str, key_file: Path, peers: tuple[str, ...], listen, ledger: Ledger) -> Mesh:  # noqa: ANN001
    mesh = Mesh(fed, me, str(key_file), ledger, peers=peers, listen=listen, deadline=connect_deadline(fed))
    with ledger.phase("connect"):
        mesh.connect()
    return mesh


@contextlib.contextmanager
def connect(
    fed: Federation,
    role: str,
    key_file: Path,
    *,
    uses_crypten: bool,
    listen: tuple[str, int] | None = None,
) -> Iterator[PartySession]:
    """Join the federation as ``role``; on exit, stop the dealer (party 0) and say goodbye on every link."""
    import torch

    torch.set_num_threads(1)  # one core per party on the 2-core reference machine
    if role not in fed.roles:
        raise ValueError(f"{role!r} is not a computing party of this federation {fed.roles}")
    dealer = uses_crypten and fed.dealer
    peers = tuple(r for r in fed.roles if r != role) + ((DEALER,) if dealer else ())
    ledger = Ledger(party=role)
    mesh = _mesh(fed, role, key_file, peers, listen, ledger)
    ok = False
    try:
        if uses_crypten:
            from mpc_fl.runtime.crypten_comm import start_crypten

            with ledger.phase("setup"):
                start_crypten(mesh, fed, fed.rank_of(role), dealer=dealer)
        yield PartySession(fed, role, MeshChannel(role, fed.roles, mesh), uses_crypten)
        ok = True
    finally:
        if uses_crypten:
            from mpc_fl.runtime.crypten_comm import stop_crypten

            with contextlib.suppress(PartyConnectionError):
                stop_crypten()
        ledger.flush()
        mesh.close(goodbye=ok)


def serve_dealer(fed: Federation, key_file: Path, *, listen: tuple[str, int] | None = None) -> int:
    """Run the Beaver-triple dealer (rank n) until party 0 says it is done; return the requests served."""
    import torch

    from mpc_fl.crypto.dealer import Dealer
    from mpc_fl.runtime.crypten_comm import start_crypten, stop_crypten

    torch.set_num_threads(1)
    if not fed.dealer:
        raise ValueError("this federation has no dealer")
    ledger = Ledger(party=DEALER)
    mesh = _mesh(fed, DEALER, key_file, fed.roles, listen, ledger)
    ok = False
    try:
        start_crypten(mesh, fed, fed.rank_of(DEALER), dealer=True)
        served = Dealer().serve()
        ok = True
        return served
    finally:
        stop_crypten()
        mesh.close(goodbye=ok)
