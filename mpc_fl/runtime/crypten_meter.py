"""Count CrypTen's traffic in the project's ledger, by direction, where it calls torch.distributed.

CrypTen's own statistics count 8 bytes per element for sent *and* received data
together, and cannot tell a party's traffic with the dealer from traffic with a peer.
Here the ``dist`` module that CrypTen's communicator and TTP use is wrapped: each
call is booked as bytes sent or received from the tensor sizes, with gloo's
algorithms for collectives (2 ranks: an all-reduce sends and receives each element
once; k ranks: ring, 2(k-1)/k of the buffer each way).
"""

from __future__ import annotations

from typing import Any

from mpc_fl.runtime.ledger import Ledger


def _nbytes(tensor: Any) -> int:
    return tensor.numel() * tensor.element_size()


class CountingDist:
    """A stand-in for ``torch.distributed`` that books every transfer in a ledger."""

    def __init__(self, real: Any, ledger: Ledger, dealer_rank: int | None):
        self._real, self._ledger, self._dealer = real, ledger, dealer_rank

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def _size(self, group: Any) -> int:
        return self._real.get_world_size(group) if group is not None else self._real.get_world_size()

    def _me(self) -> int:
        return self._real.get_rank()

    def send(self, tensor, dst, group=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        self._ledger.record_send(_nbytes(tensor), dealer=dst == self._dealer)
        return self._real.send(tensor, dst, group, *args, **kwargs)

    def isend(self, tensor, dst, group=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        self._ledger.record_send(_nbytes(tensor), dealer=dst == self._dealer)
        return self._real.isend(tensor, dst, group, *args, **kwargs)

    def recv(self, tensor, src=None, group=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        out = self._real.recv(tensor, src, group, *args, **kwargs)
        self._ledger.record_recv(_nbytes(tensor), dealer=src == self._dealer)
        return out

    def irecv(self, tensor, src=None, group=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        self._ledger.record_recv(_nbytes(tensor), dealer=src == self._dealer)
        return self._real.irecv(tensor, src, group, *args, **kwargs)

    def broadcast(self, tensor, src, group=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        k, n = self._size(group), _nbytes(tensor)
        if self._me() == src:
            self._ledger.record_send(n * (k - 1))  # parties never broadcast to the dealer
        else:
            self._ledger.record_recv(n, dealer=src == self._dealer)
            self._ledger.record_round()
        return self._real.broadcast(tensor, src, group, *args, **kwargs)

    def all_reduce(self, tensor, *args, group=None, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        k, n = self._size(group), _nbytes(tensor)
        each_way = n * 2 * (k - 1) // k
        self._ledger.record_send(each_way)
        self._ledger.record_recv(each_way)
        return self._real.all_reduce(tensor, *args, group=group, **kwargs)

    def reduce(self, tensor, dst, *args, group=None, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        k, n = self._size(group), _nbytes(tensor)
        if self._me() == dst:
            self._ledger.record_recv(n * (k - 1))
            self._ledger.record_round()
        else:
            self._ledger.record_send(n)
        return self._real.reduce(tensor, dst, *args, group=group, **kwargs)

    def gather(self, tensor, gather_list=None, dst=0, group=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        k, n = self._size(group), _nbytes(tensor)
        if self._me() == dst:
            self._ledger.record_recv(n * (k - 1))
            self._ledger.record_round()
        else:
            self._ledger.record_send(n)
        return self._real.gather(tensor, gather_list, dst, group, *args, **kwargs)

    def scatter(self, tensor, scatter_list=None, src=0, group=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        k, n = self._size(group), _nbytes(tensor)
        if self._me() == src:
            self._ledger.record_send(n * (k - 1))
        else:
            self._ledger.record_recv(n)
            self._ledger.record_round()
        return self._real.scatter(tensor, scatter_list, src, group, *args, **kwargs)

    def all_gather(self, tensor_list, tensor, group=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        k, n = self._size(group), _nbytes(tensor)
        self._ledger.record_send(n * (k - 1))
        self._ledger.record_recv(n * (k - 1))
        return self._real.all_gather(tensor_list, tensor, group, *args, **kwargs)

    def barrier(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self._ledger.record_round()
        return self._real.barrier(*args, **kwargs)


def install(ledger: Ledger, dealer_rank: int | None) -> None:
    """Route CrypTen's communicator and TTP through a :class:`CountingDist` booking into ``ledger``."""
    import crypten.communicator.distributed_communicator as dc
    import crypten.mpc.provider.ttp_provider as ttp
    import torch.distributed as dist

    counting = CountingDist(dist, ledger, dealer_rank)
    dc.dist = counting
    ttp.dist = counting
