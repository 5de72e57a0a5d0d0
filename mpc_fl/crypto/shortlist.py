"""A shortlist chosen from secret-shared scores without opening them: top K, or above a secret threshold.

Why: the referral job hands the platform the prospects it should refer, and the scores say more
than the list (how close each prospect came, the shape of the bank's model). Both selections run
on the shares, and only the 0/1 membership of each row is opened, to one party.

* :func:`above_threshold`: ``[z_i >= t]`` for a threshold ``t`` that the bank inputs secretly:
  one comparison per row.
* :func:`top_k`: exactly ``k`` ones, at the ``k`` largest scores. The ``k``-th largest key is
  built bit by bit from the top, never opened: with the candidate ``c = tau + 2^j``, the count
  ``#{i : key_i >= c}`` is compared with ``k`` (a shared bit ``b``) and ``tau += b 2^j``. Every
  step is exact integer arithmetic on the shares (a bit times a public power of two is local),
  so ``tau`` ends at the ``k``-th largest key and ``[key_i >= tau]`` has exactly ``k`` ones. Cost:
  :func:`key_bits` steps (``bound_bits + precision + ceil(log2 n) + 1``), each ``n + 1``
  comparisons in two sign tests (the carry-only test of :mod:`mpc_fl.crypto.online`: six
  rounds each), so about 12 rounds per step.

Keys: the score's fixed-point integer, saturated at ``+-2^bound_bits`` (two comparisons per row,
so a larger score cannot wrap the ring), times ``2^t`` plus a tie-break rank in ``[0, 2^t)`` that
one party adds to its share: a random permutation of the rows drawn by that party (it knows its
own row order; the others see only shares). Ties between equal scores are then broken at random
and the list has exactly ``k`` rows; rows whose scores differ by less than ``2^-precision`` rank
in random order among themselves.

What is opened: the membership bits, to ``to`` only; nothing else (every count, candidate and
comparison stays shared). The size of the input (the number of rows) is public to every party.
Threat model: that of the comparisons, semi-honest computing parties and a dealer that colludes
with nobody.
"""

from __future__ import annotations

from mpc_fl.crypto.secure_crypten import crypten

# isort: split

import math

import torch
from crypten.mpc import MPCTensor

from mpc_fl.crypto import share_math
from mpc_fl.crypto.online import TwoParty, plan_msb
from mpc_fl.crypto.preprocessing import Plan, fetch
from mpc_fl.crypto.prg import PRG

#: |score| above 2^BOUND_BITS saturates (a logit of 1024 is a probability within 1e-400 of 0 or 1)
BOUND_BITS = 10
#: steps of :func:`top_k` whose correlations come in one dealer request (memory against rounds)
STEPS_PER_REQUEST = 8


def key_bits(n_rows: int, precision: int, bound_bits: int = BOUND_BITS) -> int:
    """How many bits a ranking key has, i.e. how many steps :func:`top_k` takes."""
    return bound_bits + precision + tie_bits(n_rows) + 1


def tie_bits(n_rows: int) -> int:
    return max(1, math.ceil(math.log2(max(n_rows, 2))))


def _bits_ge(x: MPCTensor, y: MPCTensor | int) -> MPCTensor:
    """``[x >= y]`` as exact 0/1 shares (precision 0)."""
    return 1 - (x - y < 0)


def saturate(v: MPCTensor, bound: int) -> MPCTensor:
    """An integer tensor clamped to ``[-bound, bound]``: two comparisons, one product round, exact."""
    over, under = _bits_ge(v, bound), _bits_ge(-v, bound)  # exclusive: at most one is 1
    ov, uv = share_math.products([(over, v), (under, v)])
    return v - ov - uv + share_math.int_mul(over, bound) - share_math.int_mul(under, bound)


def ranking_keys(
    z: MPCTensor, *, rank: int, tie_breaker: int, bound_bits: int = BOUND_BITS
) -> tuple[MPCTensor, int]:
    """Distinct non-negative integer keys in the order of ``z`` (ties at random), and their bit length.

    ``tie_breaker``: the rank of the party that draws the tie-break permutation and adds it to its
    share; every party calls this collectively.
    """
    n = z.size(0)
    prec = share_math.precision(z)
    t = tie_bits(n)
    bound = 1 << (bound_bits + prec)
    v = saturate(share_math.raw(z), bound)
    shifted = share_math.on_shares(v, lambda s: s * (1 << t), bits=0)
    ties = PRG.fresh().permutation(n) if rank == tie_breaker else None

    def add_ties(s: torch.Tensor) -> torch.Tensor:
        out = s.clone()
        if ties is not None:
            out += torch.as_tensor(ties, dtype=torch.long)
        if rank == 0:
            out += bound << t  # the offset that makes every key non-negative: added once
        return out

    keys = share_math.on_shares(shifted, add_ties, bits=0)
    return keys, key_bits(n, prec, bound_bits)


def top_k(z: MPCTensor, k: int, *, rank: int, tie_breaker: int, bound_bits: int = BOUND_BITS) -> MPCTensor:
    """0/1 shares (precision 0) with exactly ``k`` ones, at the ``k`` largest entries of ``z`` (n,).

    Two computing parties and the dealer: the sign tests run on the online engine, their
    correlations fetched for :data:`STEPS_PER_REQUEST` steps at a time (one dealer round each).
    """
    n = z.size(0)
    if not 1 <= k <= n:
        raise ValueError(f"top_k needs 1 <= k <= the number of rows ({n}), got k={k}")
    keys, bits = ranking_keys(z, rank=rank, tie_breaker=tie_breaker, bound_bits=bound_bits)
    comm = crypten.communicator.get()
    one = torch.ones(1, dtype=torch.long) if rank == 0 else torch.zeros(1, dtype=torch.long)
    key_shares = keys.share
    tau = torch.zeros(1, dtype=torch.long)
    engine = None
    for step, j in enumerate(reversed(range(bits))):
        if step % STEPS_PER_REQUEST == 0:
            plan = Plan()
            for _ in range(min(STEPS_PER_REQUEST, bits - step)):
                plan_msb(plan, n)
                plan_msb(plan, 1)
            engine = TwoParty(fetch(plan, {}), rank, comm)
        candidate = tau + one * (1 << j)
        count = (one - engine.msb(key_shares - candidate)).sum().reshape(1)  # #{key >= candidate}
        enough = one - engine.msb(count - one * k)  # [count >= k]
        tau = tau + enough * (1 << j)
    plan = Plan()
    plan_msb(plan, n)
    engine = TwoParty(fetch(plan, {}), rank, comm)
    return MPCTensor.from_shares(one - engine.msb(key_shares - tau), precision=0)


def above_threshold(z: MPCTensor, threshold: MPCTensor) -> MPCTensor:
    """0/1 shares (precision 0) of ``[z_i >= threshold]``, ``threshold`` a shared scalar of z's precision."""
    return _bits_ge(z, threshold)
