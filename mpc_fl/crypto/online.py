"""Two-party secure arithmetic on CrypTen's shares with preprocessed randomness: one opening per round.

The online half of :mod:`mpc_fl.crypto.preprocessing`. Shares are CrypTen's: int64 tensors in
Z_2^64, additive across the two parties, fixed point with 16 fractional bits. Every
operation here costs exactly the openings listed, and independent operations of one step
are opened together (one all-reduce), so a round is a round:

* :meth:`TwoParty.mul`: Beaver products, one opening for any number of them;
* :meth:`TwoParty.msb`: the sign bit of shared values by a carry-only circuit: the sign of
  ``x0 + x1`` is ``msb(x0) xor msb(x1) xor carry``, where the carry out of the low 63 bits of the
  two private summands is a parallel-prefix (generate, propagate) reduction: one AND level for
  the generate bits, six levels of the prefix tree (two ANDs per node, one at the root: 189 AND
  bits per element against the 832 of CrypTen's full adder), then one opening to turn the
  XOR-shared bit into an arithmetic one (with a dealer bit known in both forms). Eight rounds.

Security: every opened value is a difference with a fresh one-time pad from the dealer
(``x - a``, ``u xor a``), so each party sees uniformly random values; the dealer sees only the
plan (tests/integration/test_engine_openings.py plays the provider against SS-LR's openings,
test_dealer_view.py the dealer). Semi-honest, two computing parties, a non-colluding dealer. Truncation after a product
is CrypTen's local two-party truncation (correct except with probability ``|x| / 2^63``).
"""

from __future__ import annotations

import numpy as np
import torch

from mpc_fl.crypto.preprocessing import Plan, Preprocessed

SCALE_BITS = 16
#: bits of a ring element below the sign bit
LOW_BITS = 63
#: the carry tree runs over 64 leaves: the 63 low bits and a neutral top leaf (generate 0, propagate 1)
_LEAVES = 64


def _levels() -> list[int]:
    """Pairs combined at each level of the carry tree (the root level needs the generate bit only)."""
    out, m = [], _LEAVES // 2
    while m >= 1:
        out.append(m)
        m //= 2
    return out


def plan_msb(plan: Plan, n: int) -> None:
    """Add what :meth:`TwoParty.msb` of ``n`` values consumes."""
    plan.add("and", _LEAVES * n)
    for m in _levels():
        plan.add("and", (2 * m - 1 if m == 1 else 2 * m) * n)
    plan.add("b2a", n)


def plan_mul(plan: Plan, n: int) -> None:
    plan.add("mul", n)


class TwoParty:
    """This party's side of the online phase: ``rank`` 0 or 1, ``comm`` CrypTen's communicator."""

    def __init__(self, pre: Preprocessed, rank: int, comm):  # noqa: ANN001
        if rank not in (0, 1) or comm.get_world_size() != 2:
            raise ValueError("the online engine runs two computing parties")
        self.pre, self.rank, self.comm = pre, rank, comm

    # ------------------------------------------------------------------ openings
    def open(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        """Reveal shared ring values to both parties (one all-reduce for all of them)."""
        return self.comm.all_reduce([x.reshape(-1) for x in xs], batched=True)

    def open_bits(self, *bs: np.ndarray) -> list[np.ndarray]:
        """Reveal XOR-shared bits to both parties, packed eight to a byte (one all-reduce)."""
        packed = [torch.from_numpy(np.packbits(b, bitorder="little")) for b in bs]
        out = self.comm.all_reduce(packed, op=torch.distributed.ReduceOp.BXOR, batched=True)
        return [
            np.unpackbits(o.numpy(), bitorder="little")[: b.size].astype(bool)
            for o, b in zip(out, bs, strict=True)
        ]

    # ------------------------------------------------------------------ arithmetic
    def trunc(self, x: torch.Tensor, bits: int = SCALE_BITS) -> torch.Tensor:
        """Drop ``bits`` fractional bits locally (CrypTen's two-party truncation)."""
        return x.div(2**bits, rounding_mode="trunc")

    def mul(
        self, pairs: list[tuple[torch.Tensor, torch.Tensor]], trunc_bits: list[int] | int = SCALE_BITS
    ) -> list[torch.Tensor]:
        """Elementwise products of shared pairs (same shapes), all in one opening; then truncation."""
        triples = [self.pre.take("mul") for _ in pairs]
        opened = self.open(
            *[
                v
                for (x, y), (a, b, _) in zip(pairs, triples, strict=True)
                for v in (x.reshape(-1) - a, y.reshape(-1) - b)
            ]
        )
        bits = trunc_bits if isinstance(trunc_bits, list) else [trunc_bits] * len(pairs)
        out = []
        for k, ((x, _), (a, b, c)) in enumerate(zip(pairs, triples, strict=True)):
            eps, delta = opened[2 * k], opened[2 * k + 1]
            z = c + eps * b + delta * a
            if self.rank == 0:
                z = z + eps * delta
            out.append((self.trunc(z, bits[k]) if bits[k] else z).view(x.shape))
        return out

    # ------------------------------------------------------------------ binary
    def _and(self, xs: list[np.ndarray], ys: list[np.ndarray]) -> list[np.ndarray]:
        """ANDs of XOR-shared bit arrays; all of one level in one opening (one bit triple per level)."""
        x, y = np.concatenate(xs), np.concatenate(ys)
        a, b, c = self.pre.take("and")
        e, f = self.open_bits(x ^ a, y ^ b)
        z = c ^ (e & b) ^ (f & a)
        if self.rank == 0:
            z ^= e & f
        return np.split(z, np.cumsum([len(v) for v in xs])[:-1])

    def msb(self, x: torch.Tensor) -> torch.Tensor:
        """The sign bit of each shared value, as arithmetic shares of 0/1 (no fractional bits)."""
        flat = x.reshape(-1)
        n = flat.numel()
        words = flat.numpy().view(np.uint64)
        low = ((words[:, None] >> np.arange(LOW_BITS, dtype=np.uint64)) & np.uint64(1)).astype(
            bool
        )  # (n, 63)
        mine = np.zeros((n, _LEAVES), dtype=bool)
        mine[:, :LOW_BITS] = low
        zero = np.zeros_like(mine)
        # generate g = a & b of the two parties' private bits; propagate p = a ^ b (local XOR shares)
        a_bits, b_bits = (mine, zero) if self.rank == 0 else (zero, mine)
        (g,) = self._and([a_bits.reshape(-1)], [b_bits.reshape(-1)])
        g = g.reshape(n, _LEAVES)
        p = mine.copy()
        if self.rank == 0:
            p[:, LOW_BITS] = True  # the neutral top leaf: propagate 1 (generate 0)
        for m in _levels():
            g_lo, g_hi, p_lo, p_hi = g[:, 0::2], g[:, 1::2], p[:, 0::2], p[:, 1::2]
            if m > 1:
                pg, pp = self._and([p_hi.reshape(-1), p_hi.reshape(-1)], [g_lo.reshape(-1), p_lo.reshape(-1)])
                g = g_hi ^ pg.reshape(n, m)
                p = pp.reshape(n, m)
            else:
                (pg,) = self._and([p_hi.reshape(-1)], [g_lo.reshape(-1)])
                g = g_hi ^ pg.reshape(n, 1)
        carry = g[:, 0]
        sign = (words >> np.uint64(LOW_BITS)).astype(bool)
        msb_xor = carry ^ sign  # XOR shares of the sign bit
        r_bits, r_arith = self.pre.take("b2a")
        (m,) = self.open_bits(msb_xor ^ r_bits)
        m_t = torch.from_numpy(m.astype(np.int64))
        out = r_arith - 2 * m_t * r_arith
        if self.rank == 0:
            out = out + m_t
        return out.view(x.shape)
