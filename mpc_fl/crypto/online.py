"""Two-party secure arithmetic on CrypTen's shares with preprocessed randomness: one opening per round.

The online half of :mod:`mpc_fl.crypto.preprocessing`. Shares are CrypTen's: int64 tensors in
Z_2^64, additive across the two parties, fixed point with 16 fractional bits. Every
operation here costs exactly the openings listed, and independent operations of one step
are opened together (one all-reduce), so a round is a round:

* :meth:`TwoParty.mul`: Beaver products, one opening for any number of them;
* :meth:`TwoParty.msb`: the sign bit of shared values by a carry-only circuit: the sign of
  ``x0 + x1`` is ``msb(x0) xor msb(x1) xor carry``, where the carry out of the low 63 bits of the
  two private summands is a parallel-prefix (generate, propagate) reduction over 64 leaves.
  Six rounds:

  1. the generate bits and the first prefix level at once: a pair of leaves' (G, P) is a sum
     of products of one bit party 0 knows and one bit party 1 knows (5 per pair), and such a
     *cross* AND needs one masked bit from each party (:meth:`TwoParty._cross_and`);
  2. to 5. four prefix levels, two ANDs per node;
  6. the root's AND and the conversion of the XOR-shared sign to arithmetic shares together:
     with the root's Beaver masks ``e, f`` and a masked ``h xor r`` opened, the sign is a
     public function of a dealer value chosen by ``(e, f)`` (the dealer sends all four).

  Per element and party: 160 cross-AND bits, 60 ANDs (120 bits) and 3 bits, 283 bits sent,
  against 379 bits in eight rounds for the plain generate-then-prefix circuit and CrypTen's
  full adder's 832 AND bits.

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


#: cross ANDs per pair of leaves in the first round: G needs 3, P needs 2
_CROSS_PER_PAIR = 5


def _levels() -> list[int]:
    """Nodes made at each prefix level after the first (pairs of leaves) and before the root."""
    out, m = [], _LEAVES // 4
    while m >= 2:
        out.append(m)
        m //= 2
    return out


def plan_msb(plan: Plan, n: int) -> None:
    """Add what :meth:`TwoParty.msb` of ``n`` values consumes."""
    plan.add("cross_and", _CROSS_PER_PAIR * (_LEAVES // 2) * n)
    for m in _levels():
        plan.add("and", 2 * m * n)
    plan.add("and_b2a", n)


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

    def exchange_bits(self, bits: np.ndarray) -> np.ndarray:
        """Send this party's bits, receive the other party's as many (packed; one all-gather)."""
        packed = torch.from_numpy(np.packbits(bits, bitorder="little"))
        theirs = self.comm.all_gather(packed)[1 - self.rank]
        return np.unpackbits(theirs.numpy(), bitorder="little")[: bits.size].astype(bool)

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
    def _cross_and(self, x: np.ndarray) -> np.ndarray:
        """XOR shares of ``x_0 & x_1``, where ``x`` is this party's own private bits (one round).

        The dealer gives party 0 a mask ``a``, party 1 a mask ``b`` and XOR shares of ``a & b``.
        Each party sends only its own masked bits (``e = x_0 ^ a``, ``f = x_1 ^ b``), half of a
        Beaver AND on shared operands; ``x_0 & x_1 = (e ^ a)(f ^ b)``.
        """
        mask, c = self.pre.take("cross_and")
        mine = x ^ mask
        other = self.exchange_bits(mine)
        if self.rank == 0:  # mask = a, other = f
            return c ^ (mask & other)
        return c ^ (other & mine) ^ (other & mask)  # mask = b, mine = f, other = e

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
        # this party's private leaf bits: the low 63 bits of its share, and the neutral top leaf
        # (party 0's bit 1, party 1's bit 0: propagate 1, generate 0)
        mine = np.zeros((n, _LEAVES), dtype=bool)
        mine[:, :LOW_BITS] = ((words[:, None] >> np.arange(LOW_BITS, dtype=np.uint64)) & np.uint64(1)).astype(
            bool
        )
        mine[:, LOW_BITS] = self.rank == 0
        lo, hi = mine[:, 0::2], mine[:, 1::2]  # (n, 32) each
        # round 1: pairs of leaves. With u = party 0's bits, v = party 1's (g = u & v, p = u ^ v):
        #   G = u_h v_h ^ (u_h u_l) v_l ^ u_l (v_h v_l),  P = u_h u_l ^ u_h v_l ^ u_l v_h ^ v_h v_l
        both = lo & hi  # u_h u_l at party 0, v_h v_l at party 1
        if self.rank == 0:
            operands = [hi, both, lo, hi, lo]
        else:
            operands = [hi, lo, both, lo, hi]
        z = self._cross_and(np.concatenate([o.reshape(-1) for o in operands])).reshape(_CROSS_PER_PAIR, n, -1)
        g = z[0] ^ z[1] ^ z[2]
        p = both ^ z[3] ^ z[4]
        for m in _levels():  # rounds 2 to 5
            g_lo, g_hi, p_lo, p_hi = g[:, 0::2], g[:, 1::2], p[:, 0::2], p[:, 1::2]
            pg, pp = self._and([p_hi.reshape(-1), p_hi.reshape(-1)], [g_lo.reshape(-1), p_lo.reshape(-1)])
            g = g_hi ^ pg.reshape(n, m)
            p = pp.reshape(n, m)
        # round 6: sign = h ^ (p_hi & g_lo), h = g_hi ^ the parties' top bits (XOR shares)
        h = g[:, 1] ^ (words >> np.uint64(LOW_BITS)).astype(bool)
        a, b, r, d = self.pre.take("and_b2a")
        e, f, m_open = self.open_bits(p[:, 1] ^ a, g[:, 0] ^ b, h ^ r)
        # sign = K ^ D[e, f] with K = (h ^ r) ^ (e & f) public and D[e, f] = r ^ (a & b) ^ e b ^ f a
        # from the dealer as arithmetic shares; K ^ D = K + D - 2 K D
        k = torch.from_numpy((m_open ^ (e & f)).astype(np.int64))
        pick = torch.from_numpy((2 * e + f).astype(np.int64))
        chosen = d.view(4, n).gather(0, pick.view(1, n)).view(n)
        out = chosen - 2 * k * chosen
        if self.rank == 0:
            out = out + k
        return out.view(x.shape)
