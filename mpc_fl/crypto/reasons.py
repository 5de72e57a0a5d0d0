"""The top R reasons of each application, ranked on secret-shared contributions; only they are opened.

Why: the bank must state the principal reasons for a decision, and some of the contributions are
a provider's. Opening every contribution would hand the bank the provider's per-unit
contributions for every application; here only the ``R`` strongest units per row are opened,
with their ranks and contributions, to the bank alone.

How, for ``(n, m)`` shares ``c`` (each row's units' contributions toward the adverse outcome):

1. keys ``k_ij = c_ij * m + (m - 1 - j)`` on the encoding integers: distinct within a row, in
   the order of ``c``, ties to the unit listed first (the plaintext's order,
   :func:`mpc_fl.models.reasons.top_reasons`);
2. one batched sign test of all ``m (m - 1) / 2`` pairs per row gives ``[k_i < k_j]``, and each
   unit's rank ``#{j : k_j > k_i}`` is a public linear map of those bits (local, exact);
3. one sign test ``[rank_i < R]``, one product round ``[top_i] * rank_i`` and ``[top_i] * c_i``;
4. one opening of ``top``, ``top * rank`` and ``top * c`` to the bank: zeros for every unit
   outside the top R, the rank and contribution of each unit in it.

Cost per row: ``m (m - 1) / 2 + m`` comparisons and ``2 m`` products; rows run in blocks of at
most :data:`PAIRS_PER_BLOCK` comparisons (the sign test's bit matrices stay small). Exact: the
comparisons are exact for keys below ``2^63`` (contributions below ``2^46 / m`` in magnitude).

What each party learns: the bank, the top R units of each row in order and their contributions
(what a reason code releases) and nothing else; every other party nothing (every opening is
under a fresh pad, tests/integration/test_reasons_view.py). The dealer: the sizes. Threat model:
that of the comparisons, semi-honest computing parties and a dealer that colludes with nobody.
"""

from __future__ import annotations

from mpc_fl.crypto.secure_crypten import crypten

# isort: split

import numpy as np
import torch
from crypten.mpc import MPCTensor

from mpc_fl.crypto import share_math

#: sign tests of one block of rows (bounds the bit matrices of the comparison)
PAIRS_PER_BLOCK = 1 << 17


def _rank_map(m: int) -> torch.Tensor:
    """``(P, m)``: rank_i = i + bits @ map, for ``bits[p] = [k_I < k_J]`` over the pairs ``I < J``.

    Unit J outranks I (``bit = 1``): I's rank grows by one; else J's does (counted in the ``i``
    term, since every J meets J earlier units).
    """
    first, second = np.triu_indices(m, 1)
    A = np.zeros((len(first), m), dtype=np.int64)
    A[np.arange(len(first)), first] += 1
    A[np.arange(len(first)), second] -= 1
    return torch.from_numpy(A)


def _block(c: MPCTensor, r: int, dst: int) -> tuple[np.ndarray, np.ndarray] | None:
    n, m = c.size()
    prec = share_math.precision(c)
    keys = share_math.int_mul(share_math.raw(c), m) + torch.arange(m - 1, -1, -1, dtype=torch.long)
    first, second = (torch.from_numpy(a) for a in np.triu_indices(m, 1))
    below = share_math.on_shares(keys, lambda s: s[:, first] - s[:, second], bits=0) < 0  # [k_I < k_J]
    A = _rank_map(m)
    rank = share_math.on_shares(below, lambda s: s @ A, bits=0) + torch.arange(m, dtype=torch.long)
    top = rank < r
    top_rank, top_value = share_math.products([(top, rank), (top, share_math.raw(c))])
    opened = MPCTensor.from_shares(
        torch.cat([top.share.reshape(-1), top_rank.share.reshape(-1), top_value.share.reshape(-1)]),
        precision=0,
    ).get_plain_text(dst=dst)
    if crypten.communicator.get().get_rank() != dst:
        return None
    flat = opened.round().long().numpy().reshape(3, n, m)
    is_top, ranks, values = flat[0].astype(bool), flat[1], flat[2] / float(1 << prec)
    if not np.all(is_top.sum(1) == r):
        raise RuntimeError("reason ranking opened a malformed selection")  # a bug or a peer that lies
    units = np.zeros((n, r), dtype=np.int64)
    out = np.zeros((n, r))
    rows, cols = np.nonzero(is_top)
    units[rows, ranks[rows, cols]] = cols
    out[rows, ranks[rows, cols]] = values[rows, cols]
    return units, out


def select_rows(c: MPCTensor, rows: np.ndarray | None, n_rows: int | None) -> MPCTensor:
    """Shares of ``c[rows]`` for ``rows`` that only party 0 knows (the others pass ``n_rows``).

    Party 0 inputs the one-hot ``(len(rows), n)`` matrix; one Beaver product picks the rows.
    """
    n = c.size(0)
    if crypten.communicator.get().get_rank() == 0:
        rows = np.asarray(rows, dtype=np.int64)
        pick = torch.zeros(len(rows), n, dtype=torch.float64)
        pick[torch.arange(len(rows)), torch.from_numpy(rows)] = 1.0
    else:
        pick = torch.zeros(int(n_rows), n, dtype=torch.float64)
    return crypten.cryptensor(pick, src=0).matmul(c)


def unit_counts(rank: int, count: int) -> list[int]:
    """Every party's number of reason units (public: the bank prints their names), rank order."""
    comm = crypten.communicator.get()
    counts = torch.zeros(comm.get_world_size(), dtype=torch.long)
    counts[rank] = count
    return comm.all_reduce(counts).tolist()


def top_reasons(c: MPCTensor, r: int, *, dst: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """At ``dst``: the ``r`` strongest units per row ``(n, r)`` and their contributions ``(n, r)``,
    strongest first; ``None`` at every other party. ``c``: ``(n, m)`` shares, larger = stronger."""
    n, m = c.size()
    r = min(r, m)
    if n == 0 or r == 0:
        empty = (np.zeros((n, r), dtype=np.int64), np.zeros((n, r)))
        return empty if crypten.communicator.get().get_rank() == dst else None
    rows = max(1, PAIRS_PER_BLOCK // max(m * (m - 1) // 2, 1))
    parts = [_block(c[i : i + rows], r, dst) for i in range(0, n, rows)]
    if parts[0] is None:
        return None
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
