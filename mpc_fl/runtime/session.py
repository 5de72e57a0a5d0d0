"""Connecting party processes: rendezvous with timeouts, CrypTen set-up, the dealer process.

Each party is its own OS process; they meet over torch.distributed (gloo) with the
``env://`` convention (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so the same
command runs parties on one machine or on several hosts. Ranks: computing parties
are 0..n-1 in role order (the bank is rank 0, CrypTen's party 0), the Beaver-triple
dealer, when there is one, is rank n.

A party that never connects is named in the error after ``connect_timeout_s``;
a party that dies mid-run makes its peers' next receive fail ("connection closed").
This module knows nothing of models or protocols.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

from mpc_fl.runtime.channel import TorchChannel
from mpc_fl.runtime.ledger import Ledger

DEALER = "dealer"


class PartyConnectionError(RuntimeError):
    """A party could not be reached, or dropped out; the message names it."""


@dataclass(frozen=True)
class Federation:
    """Who takes part and where they meet."""

    roles: tuple[str, ...] = ("bank", "provider")
    dealer: bool = True
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    connect_timeout_s: float = 60.0
    op_timeout_s: float = 1800.0

    @property
    def n_parties(self) -> int:
        return len(self.roles)

    @property
    def world_size(self) -> int:
        return self.n_parties + int(self.dealer)

    def rank_of(self, name: str) -> int:
        if name == DEALER:
            if not self.dealer:
                raise ValueError("this federation has no dealer")
            return self.n_parties
        return self.roles.index(name)

    def name_of(self, rank: int) -> str:
        return DEALER if rank == self.n_parties else self.roles[rank]


def _roll_call(fed: Federation, rank: int):  # noqa: ANN202 - returns a torch TCPStore
    """Open the rendezvous store and wait for every party; name the ones that never come."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=fed.connect_timeout_s)
    me = fed.name_of(rank)
    try:
        store = dist.TCPStore(
            fed.master_addr,
            fed.master_port,
            fed.world_size,
            rank == 0,
            timeout=timeout,
            wait_for_workers=False,
        )
    except (RuntimeError, TimeoutError, OSError) as err:
        where = f"{fed.master_addr}:{fed.master_port}"
        if rank == 0:
            raise PartyConnectionError(
                f"{me}: cannot listen on {where} ({err}); is the port in use?"
            ) from None
        raise PartyConnectionError(
            f"{me}: could not reach {fed.name_of(0)!r} (rank 0) at {where} within {fed.connect_timeout_s:.0f} s"
        ) from None
    store.set(f"rollcall/{rank}", me)
    keys = [f"rollcall/{r}" for r in range(fed.world_size)]
    try:
        store.wait(keys, timeout)
    except (RuntimeError, TimeoutError):
        missing = [fed.name_of(r) for r in range(fed.world_size) if not store.check([keys[r]])]
        raise PartyConnectionError(
            f"{me}: {', '.join(repr(m) for m in missing)} did not connect within {fed.connect_timeout_s:.0f} s"
        ) from None
    return store


@contextlib.contextmanager
def _process_group_from(store, fed: Federation) -> Iterator[None]:  # noqa: ANN001
    """Make ``init_process_group`` (also when CrypTen calls it) use our store and timeout."""
    import torch.distributed as dist

    original = dist.init_process_group

    def init_with_store(backend: str = "gloo", *args, rank: int = -1, world_size: int = -1, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs.pop("init_method", None)
        original(
            backend,
            store=store,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=fed.op_timeout_s),
        )

    dist.init_process_group = init_with_store
    try:
        yield
    finally:
        dist.init_process_group = original


def _crypten_env(fed: Federation, rank: int) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(fed.n_parties),
        RENDEZVOUS="env://",
        MASTER_ADDR=fed.master_addr,
        MASTER_PORT=str(fed.master_port),
        DISTRIBUTED_BACKEND="gloo",
    )


def configure_crypten(dealer: bool) -> None:
    """Choose the triple provider before ``crypten.init`` (it decides the process-group size).

    With a dealer, triples come from CrypTen's TTP (a separate, non-colluding process).
    Without one, CrypTen's TFP mode runs: party 0 generates every triple and can unmask
    every opened value, so it is insecure and only for debugging.
    """
    from mpc_fl.crypto._crypten_compat import crypten

    crypten.cfg.mpc.provider = "TTP" if dealer else "TFP"
    crypten.cfg.communicator.verbose = True


@dataclass
class PartySession:
    """What a computing party gets once connected: its channel (with ledger) and the federation."""

    fed: Federation
    role: str
    channel: TorchChannel
    uses_crypten: bool

    @property
    def rank(self) -> int:
        return self.fed.rank_of(self.role)

    @property
    def roles(self) -> tuple[str, ...]:
        return self.fed.roles


@contextlib.contextmanager
def connect(fed: Federation, role: str, *, uses_crypten: bool) -> Iterator[PartySession]:
    """Join the federation as ``role``; on exit, shut down cleanly (and stop the dealer)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # one core per party on the 2-core reference machine
    rank = fed.rank_of(role)
    store = _roll_call(fed, rank)
    ranks = {r: fed.rank_of(r) for r in fed.roles}
    ledger = Ledger(party=role)
    with _process_group_from(store, fed):
        if uses_crypten:
            from mpc_fl.crypto._crypten_compat import crypten
            from mpc_fl.runtime import crypten_meter

            configure_crypten(fed.dealer)
            _crypten_env(fed, rank)
            crypten_meter.install(ledger, fed.rank_of(DEALER) if fed.dealer else None)
            crypten.init()
        else:
            dist.init_process_group("gloo", rank=rank, world_size=fed.world_size)
    channel = TorchChannel(role, fed.roles, ranks, ledger)
    try:
        yield PartySession(fed, role, channel, uses_crypten)
    except RuntimeError as err:
        if "Connection closed by peer" in str(err) or "Connection reset" in str(err):
            raise PartyConnectionError(f"{role}: a peer dropped out mid-run ({err})") from None
        raise
    finally:
        channel.drain()
        ledger.flush()
        if uses_crypten:
            from mpc_fl.crypto._crypten_compat import crypten

            crypten.uninit()  # party 0's uninit also tells the dealer to terminate
        if dist.is_initialized():
            dist.destroy_process_group()


def serve_dealer(fed: Federation, dealer_cls: type | None = None) -> None:
    """Run the Beaver-triple dealer (rank n) until party 0 shuts down."""
    import torch

    torch.set_num_threads(1)
    if dealer_cls is None:
        from mpc_fl.crypto.dealer import Dealer

        dealer_cls = Dealer
    rank = fed.rank_of(DEALER)
    store = _roll_call(fed, rank)
    with _process_group_from(store, fed):
        configure_crypten(True)
        _crypten_env(fed, rank)
        dealer_cls()
