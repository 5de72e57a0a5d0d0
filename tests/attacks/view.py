"""A party's whole view of a run, recorded inside its own process: what it learns from every message.

Why: a freshness test must see everything a party receives, not the openings one estimator
looks at. :func:`record` patches the transport and the two places that parse typed payloads,
before the parties fork (each forked party and the dealer fill their own copy):

* ring words (int64): every arithmetic opening (the all-reduced or reduced sum: the party's own
  share plus what it received), every broadcast it receives from another party ("broadcast",
  e.g. a fixed-mask matrix's ``E = M - A``) or from the dealer ("dealer", party 0's corrections),
  every int64 gathered or received point to point, and the masked shares an owner of private bits
  receives ("private");
* bit vectors: every bit opening ("open"), the other party's masked bits of a cross AND
  ("exchange") and an owner's masked bits ("private"), at their true lengths.

Each item is kept with the ledger phase it arrived in and its source, as one vector per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tests.attacks import freshness

#: ring words from the other computing parties; "dealer" (party 0's corrections) is kept apart
PARTY_SOURCES = ("open", "broadcast", "gather", "recv", "private")
RING_SOURCES = (*PARTY_SOURCES, "dealer")
BIT_SOURCES = ("open", "exchange", "private")


@dataclass
class View:
    """One party's received items: ``(phase, source, vector)``; plain data, so it crosses processes."""

    ring: list[tuple[str, str, np.ndarray]] = field(default_factory=list)
    bits: list[tuple[str, str, np.ndarray]] = field(default_factory=list)

    def ring_words(
        self, phases: tuple[str, ...], sources: tuple[str, ...] = RING_SOURCES
    ) -> list[np.ndarray]:
        return [v for p, s, v in self.ring if p in phases and s in sources]

    def bit_vectors(
        self, phases: tuple[str, ...], sources: tuple[str, ...] = BIT_SOURCES
    ) -> list[np.ndarray]:
        return [v for p, s, v in self.bits if p in phases and s in sources]

    def freshness(self, phases: tuple[str, ...]) -> tuple[list[freshness.Finding], list[np.ndarray]]:
        """Every freshness statistic over the view in ``phases``, and the revealed vectors left out.

        The other parties' vectors holding a plaintext-sized word (sizes, outputs: what the
        protocol reveals) are left out whole and returned, for the caller to check. The dealer's
        replies are byte strings of ring words and packed bits, each padded to whole words with
        zeros: their words join the nearest-words statistic without the padding (words below
        :data:`freshness.SMALL`), and stay out of the same-position one (padding sits at fixed
        positions).
        """
        padded, revealed = freshness.split_revealed(self.ring_words(phases, PARTY_SOURCES))
        dealer = [
            w[np.abs(w.astype(np.float64)) >= freshness.SMALL] for w in self.ring_words(phases, ("dealer",))
        ]
        found = [freshness.nearest_words(padded + dealer), freshness.same_position(padded)]
        found.append(freshness.xor_agreement(self.bit_vectors(phases)))
        return found, revealed

    def export(self) -> View:
        """A copy to return from the party's process (the live one keeps growing)."""
        return View(list(self.ring), list(self.bits))


def _phase() -> str:
    from mpc_fl.crypto.secure_crypten import crypten

    return crypten.communicator.get().mesh.ledger.phase_name


def record(monkeypatch) -> View:  # noqa: ANN001
    """Patch the transport so each (forked) party keeps its whole view; returns that party's view."""
    from mpc_fl.crypto import private_bits
    from mpc_fl.crypto.online import TwoParty
    from mpc_fl.runtime import crypten_comm
    from mpc_fl.runtime.crypten_comm import MeshCommunicator

    view = View()
    orig = {
        n: getattr(MeshCommunicator, n) for n in ("all_reduce", "reduce", "broadcast", "all_gather", "recv")
    }

    def ring(source: str, tensors) -> None:  # noqa: ANN001
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.numel():
                view.ring.append((_phase(), source, t.reshape(-1).numpy().copy()))

    def all_reduce(self, input, op=crypten_comm._SUM, batched=False):  # noqa: A002, ANN001, ANN202
        out = orig["all_reduce"](self, input, op, batched)
        if op == crypten_comm._SUM:  # XOR openings are kept as bits, at their true lengths, below
            ring("open", out if batched else [out])
        return out

    def reduce(self, input, dst, op=crypten_comm._SUM, batched=False):  # noqa: A002, ANN001, ANN202
        out = orig["reduce"](self, input, dst, op, batched)
        if out is not None and op == crypten_comm._SUM:
            ring("open", out if batched else [out])
        return out

    def broadcast(self, input, src, group=None, batched=False):  # noqa: A002, ANN001, ANN202
        out = orig["broadcast"](self, input, src, group, batched)
        if self.rank != src:
            ring("dealer" if src == self.get_ttp_rank() else "broadcast", out if batched else [out])
        return out

    def all_gather(self, tensor):  # noqa: ANN001, ANN202
        out = orig["all_gather"](self, tensor)
        ring("gather", [t for r, t in enumerate(out) if r != self.rank])
        return out

    def recv(self, tensor, src=None, group=None):  # noqa: ANN001, ANN202
        out = orig["recv"](self, tensor, src, group)
        ring("recv", [out])
        return out

    for name, fn in (
        ("all_reduce", all_reduce),
        ("reduce", reduce),
        ("broadcast", broadcast),
        ("all_gather", all_gather),
        ("recv", recv),
    ):
        monkeypatch.setattr(MeshCommunicator, name, fn)

    open_bits, exchange_bits = TwoParty.open_bits, TwoParty.exchange_bits

    def spy_open_bits(self, *bs):  # noqa: ANN001, ANN202
        out = open_bits(self, *bs)
        view.bits.extend((_phase(), "open", o.copy()) for o in out)
        return out

    def spy_exchange_bits(self, bits):  # noqa: ANN001, ANN202
        out = exchange_bits(self, bits)
        view.bits.append((_phase(), "exchange", out.copy()))
        return out

    monkeypatch.setattr(TwoParty, "open_bits", spy_open_bits)
    monkeypatch.setattr(TwoParty, "exchange_bits", spy_exchange_bits)

    words, unpack = private_bits._words, private_bits._unpack

    def spy_words(data, shape):  # noqa: ANN001, ANN202
        out = words(data, shape)
        view.ring.append((_phase(), "private", out.reshape(-1).numpy().copy()))
        return out

    def spy_unpack(data, shape):  # noqa: ANN001, ANN202
        out = unpack(data, shape)
        view.bits.append((_phase(), "private", out.reshape(-1).copy()))
        return out

    monkeypatch.setattr(private_bits, "_words", spy_words)
    monkeypatch.setattr(private_bits, "_unpack", spy_unpack)
    return view
