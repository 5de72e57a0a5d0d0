"""Exact arithmetic on CrypTen arithmetic shares: integer maps, batched products, 1/x, argmax.

Why a module of its own: these are general tools on shares, not steps of one protocol. SS-GBDT
(:mod:`mpc_fl.protocols.ss_gbdt`) builds its gains, leaf weights and split choice from them,
and they are tested here without a protocol (tests/unit/crypto/test_share_math.py).

The common idea: a tensor at precision 0 (a bit, a count) is an exact integer, so products
with it need no truncation, and linear integer maps (cumsum, integer scaling, re-encoding)
act on each party's share locally. Communication happens only in :func:`products` (one
Beaver round with the dealer's masks, :mod:`mpc_fl.crypto.products`), in what calls it
(:class:`RangeReduced`, :func:`argmax_first`), and in the sign tests (comparisons,
:mod:`mpc_fl.crypto.compare`) of :func:`argmax_first`.
"""

from __future__ import annotations

from mpc_fl.crypto.secure_crypten import crypten

# isort: split

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from crypten.mpc import MPCTensor

from mpc_fl.crypto.products import beaver_products

__all__ = [
    "PAD",
    "QUARTIC_ITERS",
    "TOURNAMENT_WIDTH",
    "RangeReduced",
    "Ride",
    "argmax_first",
    "int_mul",
    "local_shares",
    "on_shares",
    "precision",
    "products",
    "raw",
    "times_factor",
    "upscale",
]

#: Iterations for 1/x on [1/16, 1] after a local Newton step from the constant 2/(1+1/16)
#: (relative error e <= 0.78): each ``y <- y (1 + e)(1 + e^2)`` takes e to e^4 in three
#: rounds (Newton squares it in two), so three reach 0.78^64 ~ 1.2e-7, as six Newton steps did.
QUARTIC_ITERS = 3
_NR_START = 2.0 / (1.0 + 1.0 / 16.0)
#: Score of padding in the argmax tournament: below SS-GBDT's invalid candidates (-1).
PAD = -4.0
#: Candidates compared per tournament round: 4 takes half the rounds of 2 for twice the comparisons.
TOURNAMENT_WIDTH = 4
# (i, j) pairs compared in one group of four, i < j: bit = [x_i >= x_j]
_PAIRS = [(i, j) for i in range(TOURNAMENT_WIDTH) for j in range(i + 1, TOURNAMENT_WIDTH)]

#: products riding along in a computation's product rounds: given what rode before, the pairs of the next
Ride = Callable[[list[MPCTensor]], list[tuple[MPCTensor, MPCTensor]]]


def precision(x: MPCTensor) -> int:
    """The fractional bits of ``x``'s encoding (0 for exact integers): decides where truncation is due."""
    return x.encoder.scale.bit_length() - 1


def on_shares(x: MPCTensor, fn: Callable[[torch.Tensor], torch.Tensor], bits: int | None = None) -> MPCTensor:
    """Apply a linear, integer-exact map to the shares (cumsum, integer scaling): no communication.

    Why: such a map commutes with the sum of the shares, so each party applies it to its own;
    CrypTen would encode the integer constants as fixed point and truncate. The result has
    ``bits`` fractional bits (default: ``x``'s).
    """
    return MPCTensor.from_shares(fn(x.share), precision=precision(x) if bits is None else bits)


def int_mul(x: MPCTensor, k: int) -> MPCTensor:
    """``x * k`` for a public integer: exact, no truncation (CrypTen would encode ``k``)."""
    return on_shares(x, lambda s: s * int(k))


def upscale(x: MPCTensor, bits: int) -> MPCTensor:
    """Re-encode an integer (precision 0) tensor with ``bits`` fractional bits: exact.

    Why: to stack counts beside fixed-point values (one tensor, one opening) without a product.
    """
    assert precision(x) == 0
    return on_shares(x, lambda s: s * (1 << bits), bits=bits)


def times_factor(v: MPCTensor, cv: MPCTensor) -> MPCTensor:
    """``v * factor`` from ``cv[j] = c_j * v``: ``factor = 1 + sum_j 15*16^j c_j`` (exact integer scaling).

    Why: :class:`RangeReduced`'s power-of-16 factor is applied with bit-times-value products
    only, never a fixed-point product by a large number.
    """
    out = v
    for j in range(cv.size(0)):
        out = out + int_mul(cv[j], 15 * 16**j)
    return out


def local_shares(values: np.ndarray | None, n: int | tuple[int, ...], bits: int = 16) -> MPCTensor:
    """The sum over the parties of each one's own ``values`` (None: zeros), as shares: no communication.

    Why: where every party already holds an additive part of a result in the clear (an HE
    protocol's partial products, a plaintext model's scores at the bank), encoding each part as
    that party's share makes the sum a secret no party sees.
    """
    mine = np.zeros(n) if values is None else np.asarray(values, dtype=np.float64).reshape(n)
    encoded = torch.from_numpy(np.round(mine * (1 << bits))).long()
    return MPCTensor.from_shares(encoded, precision=bits)


def raw(x: MPCTensor) -> MPCTensor:
    """``x`` as the integers that encode it (precision 0): same shares, no communication.

    Why: comparisons and bit selections on the encoding integers are exact (same order as ``x``).
    """
    return MPCTensor.from_shares(x.share, precision=0)


def products(pairs: Sequence[tuple[MPCTensor, MPCTensor]]) -> list[MPCTensor]:
    """``a * b`` for several pairs (broadcasting) in one Beaver round, each distinct operand opened once.

    Why: independent products cost one round together instead of one each, and a tensor used
    in several of them (or broadcast against a larger one) is opened once, at its own size
    (:func:`mpc_fl.crypto.products.beaver_products`). The encoding integers are multiplied; a
    pair with an operand at precision 0 (a bit, a count) is then exact, with no truncation, at
    the other operand's precision; a pair of two fixed-point values is truncated like CrypTen's
    product (two-party local truncation).
    """
    pairs = list(pairs)
    out = []
    for (a, b), share in zip(pairs, beaver_products(pairs), strict=True):
        pa, pb = precision(a), precision(b)
        if min(pa, pb) == 0:
            out.append(MPCTensor.from_shares(share, precision=pa + pb))
        else:
            # CrypTen's truncation by a public integer, as in its own products
            out.append(MPCTensor.from_shares(share, precision=pa).div(2**pb))
    return out


class RangeReduced:
    """``1/x`` for shared ``x`` in ``[16^-K, ~1]`` as ``factor * y`` with ``y = 1/x'`` in ``[1, 16]``.

    ``c_j = [x < 16^-j]`` (exact 0/1 integers) give ``factor = 1 + sum_j 15*16^(j-1) c_j``
    (a power of 16); ``x' = x * factor`` lies in ``[1/16, 1]`` where the iterations converge
    fast and every product stays below 16 in magnitude. Multiplying a result by ``factor``
    afterwards uses only bit-times-value products (no truncation) and integer scaling.

    Why not CrypTen's ``reciprocal``: it runs on the whole fixed-point range, so its
    intermediate products grow large enough to wrap (../shared/docs/crypten.md 2.2, 2.4).
    """

    @staticmethod
    def thresholds(x: MPCTensor, k: int) -> MPCTensor:
        """``x - 16^-j`` for j = 1..k, stacked: ``c_j = 1 - [x - 16^-j >= 0]``.

        Exposed so a caller can batch these sign tests with its own (one comparison, not two).
        """
        thr = torch.tensor([16.0**-j for j in range(1, k + 1)]).view(k, *([1] * x.dim()))
        return crypten.stack([x] * k) - thr

    def __init__(
        self,
        x: MPCTensor,
        k: int,
        times: MPCTensor,
        ge: MPCTensor | None = None,
        square: bool = False,
        ride: Sequence[Ride] = (),
    ):
        """``self.scaled = times/x'`` (``times^2/x'`` with ``square``; ``times`` shaped like ``x``),
        its products folded into the iterations' rounds (none of its own).

        ``ge``: ``thresholds(x, k) >= 0`` if the caller computed it already. ``ride``: the
        caller's products for this computation's first product rounds, one list per round
        (results in ``self.ridden``, in order).
        """
        self.k = k
        self.ridden: list[MPCTensor] = []
        rides = list(ride)

        def round_(pairs: list[tuple[MPCTensor, MPCTensor]]) -> list[MPCTensor]:
            extra = rides.pop(0)(self.ridden) if rides else []
            out = products([*pairs, *extra])
            self.ridden.extend(out[len(pairs) :])
            return out[: len(pairs)]

        if k > 0:
            if ge is None:
                ge = self.thresholds(x, k) >= 0
            self.c = 1 - ge  # (k, ...) [x < 16^-j], exact 0/1, precision 0
            (cx,) = round_([(self.c, x)])  # bits times x (broadcast, opened once): exact
            xs = times_factor(x, cx)
        else:
            xs = x
        y = xs * (-_NR_START * _NR_START) + 2 * _NR_START  # first Newton step from the constant
        w = times
        for i in range(QUARTIC_ITERS):
            last = i == QUARTIC_ITERS - 1
            pairs = [(xs, y)]
            if i == 0 and square:
                pairs.append((w, w))
            if last:
                pairs.append((w, y))  # (squared by now: QUARTIC_ITERS > 1)
            out = round_(pairs)
            if i == 0 and square:
                w = out[1]
            e = 1 - out[0]
            carry = out[-1] if last else y  # the last iteration carries times * y
            e2, ce = round_([(e, e), (carry, e)])  # e^2 and y e, e opened once
            yc = carry + ce  # y (1 + e)
            (y,) = round_([(yc, 1 + e2)])  # y (1 + e)(1 + e^2): error e^4
        self.scaled = y

    def times_factor(self, v: MPCTensor) -> MPCTensor:
        """``v * factor`` (``v`` shaped like ``x``): exact apart from ``v``'s own error."""
        if self.k == 0:
            return v
        (cv,) = products([(self.c, v)])  # v broadcast over the k bits: opened once
        return times_factor(v, cv)


def argmax_first(x: MPCTensor) -> MPCTensor:
    """One-hot of the first maximum along dim 1 of a (k, N) tensor: a 4-way tournament.

    Each round splits the survivors into groups of four, compares all six pairs at once
    (one comparison call), and keeps each group's first maximum: candidate i wins iff
    ``x_i > x_j`` for every earlier j and ``x_i >= x_j`` for every later j, so ties break like
    :func:`mpc_fl.models.gbdt.best_split` (first in row-major order). The winner carries its
    position as a one-hot over its group's members (selected in the same product as its
    value), so no pass back down the tree is needed. Per round: one comparison, then two
    product rounds: the first two win-bit factors together with the third factor times the
    values, then their product (the selection). Values must exceed :data:`PAD`.

    The tournament runs on the encoded integers (precision 0): every product is a bit times
    an integer, so nothing is truncated and the one-hot comes out as exact 0/1 integers, ready
    to select columns of other precision-0 tensors (the oblivious routing) without rounding.
    """
    k, N = x.size()
    scale = 1 << precision(x)
    ints = raw(x)  # x * scale as integers: same order
    rounds = max(1, math.ceil(math.log(N, TOURNAMENT_WIDTH) - 1e-9)) if N > 1 else 0
    width = TOURNAMENT_WIDTH**rounds
    if width > N:
        ints = crypten.cat(
            [ints, crypten.cryptensor(torch.full((k, width - N), PAD * scale), precision=0)], dim=1
        )
    # T[..., 0] is the value, T[..., 1:] the one-hot of its position within its subtree
    T = crypten.cat([ints.unsqueeze(2), crypten.cryptensor(torch.ones(k, width, 1), precision=0)], dim=2)
    for _ in range(rounds):
        groups = T.size(1) // TOURNAMENT_WIDTH
        T = T.reshape(k, groups, TOURNAMENT_WIDTH, T.size(2))
        v = T[:, :, :, 0]
        diffs = crypten.stack([v[:, :, i] - v[:, :, j] for i, j in _PAIRS])  # (6, k, groups)
        ge = diffs >= 0  # exact 0/1, precision 0
        c = {pair: ge[n] for n, pair in enumerate(_PAIRS)}
        # win bit of candidate i: product of three bits
        first = crypten.stack([c[0, 1], 1 - c[0, 1], 1 - c[0, 2], 1 - c[0, 3]])
        second = crypten.stack([c[0, 2], c[1, 2], 1 - c[1, 2], 1 - c[1, 3]])
        third = crypten.stack([c[0, 3], c[1, 3], c[2, 3], 1 - c[2, 3]])
        # win bit of i times its values: (first * second) * (third * T), two rounds, exact
        third = third.permute(1, 2, 0).unsqueeze(3)  # broadcast over T's columns: opened once
        both, third_t = products([(first, second), (third, T)])
        picked = both.permute(1, 2, 0).unsqueeze(3) * third_t  # exactly one winner per group
        value = picked[:, :, :, 0].sum(2, keepdim=True)
        T = crypten.cat([value, picked[:, :, :, 1:].reshape(k, groups, -1)], dim=2)
    return T[:, 0, 1 : N + 1]
