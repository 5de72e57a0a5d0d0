"""Joining a federation: authenticated, encrypted links to every peer, then CrypTen on top.

Each party is its own OS process; it reads the federation file (public: members,
addresses, certificates) and its own key file, listens on its own address and dials
its peers (:mod:`mpc_fl.runtime.mesh`), so the same command runs parties on one
machine or on several hosts. Ranks: computing parties are 0..n-1 in the file's order
(the bank is rank 0, CrypTen's party 0); the Beaver-triple dealer, when there is one,
is rank n.

A party that never connects is named after the connect timeout, counted from when this
process is ready to connect (its imports and file checks done, its listener about to open:
on a busy machine imports alone took up to a minute); a party that dies mid-run makes its
peers' next receive fail, naming it.
This module knows nothing of models or protocols.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpc_fl.runtime.channel import MeshChannel
from mpc_fl.runtime.errors import PartyConnectionError, ProtocolMismatchError
from mpc_fl.runtime.federation import DEALER, Federation
from mpc_fl.runtime.ledger import Ledger
from mpc_fl.runtime.mesh import Mesh
from mpc_fl.runtime.progress import Progress

#: Version of the handshake and of the frames on the links; a peer with another one is refused.
HANDSHAKE_FORMAT = 1
#: Packages whose versions must match across members (they define the computation and the wire).
HANDSHAKE_PACKAGES = ("mpc_fl", "torch", "crypten", "sf-heu")

__all__ = [
    "DEALER", "Federation", "PartyConnectionError", "PartySession", "connect", "serve_dealer",
    "tell_peers_of_failure",
]  # fmt: skip


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


log = logging.getLogger(__name__)


def connect_deadline(fed: Federation) -> float:
    """The monotonic time by which every peer must be connected: the timeout from now (ready).

    Also records, in the log, how long this process took from its start to being ready.
    """
    log.info("ready to connect after %.2f s (process start to listening)", process_age_s())
    return time.monotonic() + fed.connect_timeout_s


@dataclass
class PartySession:
    """What a computing party gets once connected: its channel (with ledger) and the federation."""

    fed: Federation
    role: str
    channel: MeshChannel
    uses_crypten: bool
    progress: Progress
    #: seconds from this process's start to being ready to connect (imports and checks done)
    ready_s: float = 0.0

    @property
    def rank(self) -> int:
        """This party's index in :attr:`roles`, CrypTen's rank: the federation puts the bank first and
        the dealer (rank n) last, so a computing party's member rank is its index among the roles."""
        return self.fed.rank_of(self.role)

    @property
    def roles(self) -> tuple[str, ...]:
        return self.fed.roles


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


#: What a mismatch is reported as first: the cause (format, versions, who) before its effects.
_ORDER = ("handshake", "versions", "parties", "protocol", "params", "alignment", "split", "dealer")


def check_handshake(me: str, mine: dict, theirs: dict[str, dict]) -> None:
    """Every setting both sides state must be equal; otherwise one line naming both values.

    The dealer states fewer settings (it runs no protocol), so only common keys are compared;
    a key only one computing party states is a difference too.
    """
    a = _flat(mine)
    for peer, other in theirs.items():
        b = _flat(other)
        keys = set(a) | set(b) if DEALER not in (me, peer) else set(a) & set(b)
        for k in sorted(
            keys, key=lambda k: (_ORDER.index(k.split(".")[0]) if k.split(".")[0] in _ORDER else 99, k)
        ):
            if a.get(k, "<not set>") != b.get(k, "<not set>"):
                raise ProtocolMismatchError(
                    f"{me} and {peer} disagree on {k}: {me} has {a.get(k, '<not set>')!r}, "
                    f"{peer} has {b.get(k, '<not set>')!r}"
                )


def _mesh(
    fed: Federation,
    me: str,
    key_file: Path,
    peers: tuple[str, ...],
    listen,
    ledger: Ledger,
    hello: dict,  # noqa: ANN001
) -> Mesh:
    mesh = Mesh(fed, me, str(key_file), ledger, peers=peers, listen=listen, deadline=connect_deadline(fed))
    with ledger.phase("connect"):
        mesh.connect()
        try:
            mesh.exchange_hello(hello, lambda peer, theirs: check_handshake(me, hello, {peer: theirs}))
        except BaseException as err:
            mesh.abort(one_line(err))
            mesh.close(goodbye=False)
            raise
    return mesh


def one_line(err: BaseException) -> str:
    """The first line of an error, for peers and for the terminal (details go to the log)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def base_hello(fed: Federation) -> dict:
    """What every member states in the handshake: versions and the federation's members."""
    from mpc_fl.runtime.provenance import versions

    pinned = {k: v for k, v in versions().items() if k in HANDSHAKE_PACKAGES}
    hello = {"handshake": HANDSHAKE_FORMAT, "versions": pinned, "parties": list(fed.roles)}
    if fed.emulates_network:  # an experiment whose members shape their links differently measures nothing
        hello["emulated_network"] = {"rtt_ms": fed.emulated_rtt_ms, "mbit": fed.emulated_mbit}
    return hello


@contextlib.contextmanager
def connect(
    fed: Federation,
    role: str,
    key_file: Path,
    *,
    uses_crypten: bool,
    listen: tuple[str, int] | None = None,
    hello: dict | None = None,
    quiet: bool = True,
    dealer: bool | None = None,
) -> Iterator[PartySession]:
    """Join the federation as ``role``: link up, compare the handshake, start CrypTen if needed.

    ``hello`` states the run's settings (protocol, every hyperparameter, alignment, split...);
    every peer must state the same, or every party fails within seconds naming both values.
    ``dealer``: whether to link to the dealer (default: if the protocol uses CrypTen and the
    federation has one; ``False`` for CrypTen's insecure TFP mode).
    On success party 0 stops the dealer and every link says goodbye; on failure every peer is
    told why (one line) before the links close.
    """
    import torch

    torch.set_num_threads(1)  # one core per party on the 2-core reference machine
    if role not in fed.roles:
        raise ValueError(f"{role!r} is not a computing party of this federation {fed.roles}")
    dealer = uses_crypten and fed.dealer if dealer is None else dealer and fed.dealer
    peers = _peers(fed, role, dealer)
    ledger = Ledger(party=role)
    hello = {**base_hello(fed), **(hello or {}), "dealer": dealer}
    ready_s = process_age_s()
    mesh = _mesh(fed, role, key_file, peers, listen, ledger, hello)
    try:
        if uses_crypten:
            from mpc_fl.runtime.crypten_comm import start_crypten

            with ledger.phase("setup"):
                start_crypten(mesh, fed, fed.rank_of(role), dealer=dealer)
        channel = MeshChannel(role, fed.roles, mesh)
        yield PartySession(
            fed, role, channel, uses_crypten, Progress(role, ledger, enabled=not quiet), ready_s=ready_s
        )
    except BaseException as err:
        mesh.abort(one_line(err))
        _forget_crypten(uses_crypten)
        mesh.close(goodbye=False)
        raise
    if uses_crypten:
        from mpc_fl.runtime.crypten_comm import stop_crypten

        stop_crypten()  # party 0 tells the dealer the run is complete
    ledger.flush()
    mesh.close(goodbye=True)


def _peers(fed: Federation, role: str, dealer: bool) -> tuple[str, ...]:
    """The members a computing party links to: the other computing parties, and the dealer if ``dealer``."""
    return tuple(r for r in fed.roles if r != role) + ((DEALER,) if dealer else ())


def tell_peers_of_failure(
    fed: Federation, role: str, key_file: Path, reason: str, *, dealer: bool = True, within_s: float = 10.0
) -> list[str]:
    """Tell every other member (the dealer too if ``dealer``) that ``role`` stops, and why.

    Best effort, for at most ``within_s`` (and the connect timeout): a member that is not
    running by then cannot be told, and names ``role`` as missing when its own timeout ends.
    Returns the members told.
    """
    peers = _peers(fed, role, dealer and fed.dealer)
    deadline = time.monotonic() + min(within_s, fed.connect_timeout_s)
    try:
        mesh = Mesh(fed, role, str(key_file), Ledger(party=role), peers=peers, deadline=deadline)
    except Exception as err:  # noqa: BLE001 - a bad key: nobody can be told, the caller's error stands
        log.info("could not tell the other members (%s)", one_line(err))
        return []
    told = mesh.announce_abort(reason)
    log.info("told %s that %s stops", ", ".join(told) or "nobody", role)
    return told


def _forget_crypten(uses_crypten: bool) -> None:
    if uses_crypten:
        from mpc_fl.runtime.crypten_comm import stop_crypten

        stop_crypten(complete=False)


def serve_dealer(
    fed: Federation, key_file: Path, *, listen: tuple[str, int] | None = None, forever: bool = False
) -> int:
    """Run the Beaver-triple dealer (rank n) until party 0 says it is done; return the requests served.

    ``forever`` (a scoring service's dealer): after each session, or a failed one, join again.
    """
    while forever:
        try:
            _dealer_session(fed, key_file, listen)
        except (PartyConnectionError, ProtocolMismatchError) as err:
            log.warning("session ended (%s); joining again", one_line(err))
            time.sleep(1.0)
    return _dealer_session(fed, key_file, listen)


def _dealer_session(fed: Federation, key_file: Path, listen: tuple[str, int] | None) -> int:
    import torch

    from mpc_fl.crypto.dealer import Dealer
    from mpc_fl.runtime.crypten_comm import start_crypten, stop_crypten

    torch.set_num_threads(1)
    if not fed.dealer:
        raise ValueError("this federation has no dealer")
    ledger = Ledger(party=DEALER)
    mesh = _mesh(fed, DEALER, key_file, fed.roles, listen, ledger, {**base_hello(fed), "dealer": True})
    try:
        start_crypten(mesh, fed, fed.rank_of(DEALER), dealer=True)
        served = Dealer().serve()
    except BaseException as err:
        mesh.abort(one_line(err))
        _forget_crypten(True)
        mesh.close(goodbye=False)
        raise
    stop_crypten()
    mesh.close(goodbye=True)
    return served
