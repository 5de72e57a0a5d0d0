"""Ask the dealer once for everything a repeated block of CrypTen operations will request.

Why: CrypTen's party 0 asks the dealer for every Beaver triple, AND triple and B2A bit
while it computes, one round trip each. In SS-GBDT that is about 255 requests per tree
(765 of the bank's 1,382 ledger calls), every one on the critical path. But the sequence of
requests depends only on shapes, so a block that runs again (a tree level in every tree)
asks for the same list every time. :class:`DealerPrefetch` records the list the first time a
named block runs; every later time, party 0 sends the whole list to the dealer in one
``batch`` request before the block starts and serves CrypTen's requests from the reply.

Nothing else changes: the dealer computes each item exactly as for the single request, from
the same per-party ChaCha20 streams in the same order (the other parties draw their shares
locally, in the same order, as before). It learns the same request list, only earlier. If a
replayed block asks for anything other than the recorded list, party 0 stops with an error
rather than use a correlation meant for another request.
"""

from __future__ import annotations

import mpc_fl.crypto.secure_crypten  # noqa: F401  (must precede any crypten import)

# isort: split

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from crypten import communicator as comm
from crypten.mpc.provider.ttp_provider import TTPClient

__all__ = ["DealerPrefetch", "PrefetchMismatch"]

_client_class = TTPClient._TTPClient__TTPClient  # CrypTen's singleton client
_original_request = _client_class.ttp_request
_active: DealerPrefetch | None = None


class PrefetchMismatch(RuntimeError):
    """A replayed block asked the dealer for something it did not ask the first time."""


def _message(func_name: str, device: Any, args: tuple, kwargs: dict) -> dict:
    """One request as the dealer receives it (CrypTen's ``ttp_request`` message)."""
    return {
        "function": func_name,
        "device": None if device is None else str(device),
        "args": args,
        "kwargs": kwargs,
    }


def _key(message: dict) -> str:
    """A canonical text of one request, to compare a replayed request with the recorded one
    (args hold sizes, op names and at most small tensors, so ``repr`` is exact)."""
    return repr((message["function"], message["device"], message["args"], sorted(message["kwargs"].items())))


def _request(client: Any, func_name: str, device: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    if _active is None:
        return _original_request(client, func_name, device, *args, **kwargs)
    return _active._serve(client, func_name, device, args, kwargs)


_client_class.ttp_request = _request


class DealerPrefetch:
    """Record each named block's dealer requests once; prefetch them in one request afterwards.

    Every party enters the same blocks in the same order (only party 0 talks to the dealer).
    """

    def __init__(self) -> None:
        self._recorded: dict[str, list[tuple[dict, torch.Size]]] = {}
        self._recording: list[tuple[dict, torch.Size]] | None = None
        self._queue: deque[tuple[str, torch.Tensor]] | None = None

    @contextmanager
    def block(self, name: str) -> Iterator[None]:
        global _active
        if comm.get().get_rank() != 0:
            yield
            return
        if _active is not None:
            raise RuntimeError("dealer prefetch blocks do not nest")
        if name in self._recorded:
            self._queue = deque(self._fetch(self._recorded[name]))
        else:
            self._recording = []
        _active = self
        try:
            yield
        finally:
            _active = None
            if self._recording is not None:
                self._recorded[name] = self._recording
            leftover = 0 if self._queue is None else len(self._queue)
            self._recording, self._queue = None, None
        if leftover:
            raise PrefetchMismatch(f"block {name!r} used {leftover} fewer dealer requests than recorded")

    def _fetch(self, recorded: list[tuple[dict, torch.Size]]) -> list[tuple[str, torch.Tensor]]:
        """One ``batch`` request for the whole list; split the flat reply by the recorded sizes."""
        flat = _original_request(TTPClient.get(), "batch", None, [message for message, _ in recorded])
        out, start = [], 0
        for message, size in recorded:
            n = size.numel()
            out.append((_key(message), flat[start : start + n].reshape(size)))
            start += n
        if start != flat.numel():
            raise PrefetchMismatch(f"dealer sent {flat.numel()} values for {start} requested")
        return out

    def _serve(self, client: Any, func_name: str, device: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        message = _message(func_name, device, args, kwargs)
        if self._queue is not None:
            key = _key(message)
            if not self._queue:
                raise PrefetchMismatch(f"request {func_name} beyond the recorded list")
            expected, result = self._queue.popleft()
            if expected != key:
                raise PrefetchMismatch(f"request {key[:120]} where the recorded list has {expected[:120]}")
            return result
        result = _original_request(client, func_name, device, *args, **kwargs)
        assert self._recording is not None
        self._recording.append((message, result.size()))
        return result
