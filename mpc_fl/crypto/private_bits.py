"""Products of a secret-shared tensor with one party's private 0/1 tensor, in one round.

Why: in SS-GBDT's default mode the owner of a split knows its left-indicator ``ind`` of every
row in the clear. A Beaver product ``[x] * [ind]`` would share ``ind`` and open both operands
(two masked values per element from every party); here only the other parties' shares of
``x`` travel, masked, to the owner, and the owner sends one masked bit per indicator back.

For owner ``O`` and the other parties ``j`` (``x = x_O + sum_j x_j``), with dealer values
(:mod:`mpc_fl.crypto.preprocessing`, item ``private_bits``): each ``j``'s own uniform ring
values ``a_j``, ``O``'s own uniform bits ``c``, and additive shares of ``t = c * sum_j a_j``:

* every ``j`` sends ``d_j = x_j - a_j`` to ``O`` (a one-time pad by ``a_j``, which ``O`` never sees);
* ``O`` sends ``f = ind xor c`` to every ``j`` (a one-time pad by ``c``);
* since ``ind = f + c - 2 f c``, ``ind * sum_j a_j = f * sum_j a_j + (1 - 2f) t``, so
  ``O``'s share is ``ind * (x_O + sum_j d_j) + (1 - 2f) [t]_O`` and ``j``'s is
  ``f * a_j + (1 - 2f) [t]_j``. Exact for any ring values (no truncation): ``ind`` is 0/1.

Columns (the last dimension) may have different owners, and ``NO_OWNER`` columns multiply by
ones (``x`` itself, nothing sent). The dealer supplies ``t`` for every possible owner of every
element, so its request (shapes only) says nothing about who owns what.

Threat model: semi-honest parties, a dealer that colludes with no party (as for every Beaver
triple, :data:`mpc_fl.crypto.dealer.DEALER_THREAT_MODEL`). What each party sees: the owner
``d_j`` (uniform), every other party ``f`` (uniform bits); the message sizes follow the
columns' owners, which the caller must treat as public.
"""

from __future__ import annotations

from mpc_fl.crypto.secure_crypten import crypten

# isort: split

import numpy as np
import torch
from crypten.mpc import MPCTensor

from mpc_fl.crypto import share_math
from mpc_fl.crypto.preprocessing import Plan, fetch

#: owner of a column whose indicator is all ones (a node without a split): no product, no message
NO_OWNER = -1


def _pack(bits: np.ndarray) -> bytes:
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def _words(data: bytes | bytearray, shape: tuple[int, ...]) -> torch.Tensor:
    """Masked shares received by an owner."""
    return torch.frombuffer(bytearray(data), dtype=torch.int64).view(shape)


def _unpack(data: bytes | bytearray, shape: tuple[int, ...]) -> np.ndarray:
    """Masked bits received from an owner."""
    n = int(np.prod(shape, dtype=np.int64))
    return (
        np.unpackbits(np.frombuffer(bytes(data), np.uint8), bitorder="little")[:n].astype(bool).reshape(shape)
    )


def mul_private_bits(
    x: MPCTensor, bits: np.ndarray | None, bits_shape: tuple[int, ...], owners: np.ndarray
) -> MPCTensor:
    """``[x * ind]``, ``ind`` of public shape ``bits_shape`` (broadcast against ``x``); column ``j``
    (last dimension of both) belongs to party ``owners[j]``.

    ``bits``: this party's indicators, of ``bits_shape``; only the columns it owns are read
    (``None`` if it owns none). Collective: every party calls it with the same public shapes
    and owners. The result has ``x``'s precision and the broadcast shape.
    """
    comm = crypten.communicator.get()
    rank, n_parties = comm.get_rank(), comm.get_world_size()
    x_shape, bits_shape = tuple(x.size()), tuple(bits_shape)
    out_shape = tuple(torch.broadcast_shapes(x_shape, bits_shape))
    owners = np.asarray(owners, dtype=np.int64)
    if len(owners) != out_shape[-1] or x_shape[-1] != out_shape[-1] or bits_shape[-1] != out_shape[-1]:
        raise ValueError(f"owners ({len(owners)}) must name every last-dimension column of {out_shape}")
    if bits is not None and tuple(bits.shape) != bits_shape:
        raise ValueError(f"bits of shape {tuple(bits.shape)}, expected {bits_shape}")
    plan = Plan()
    plan.add("private_bits", list(x_shape), list(bits_shape), n_parties)
    a, c, t = fetch(plan, {}).take("private_bits")
    a, c = a.view(x_shape), c.reshape(bits_shape)
    t = t.view(n_parties, *out_shape)
    share = x.share
    out = share.expand(out_shape).clone()  # NO_OWNER columns: x itself

    # per owner q: its columns, and the shapes of what crosses the wire for them (public)
    groups = []
    for q in range(n_parties):
        cols = torch.from_numpy(np.flatnonzero(owners == q))
        if len(cols):
            sub_x, sub_bits = (*x_shape[:-1], len(cols)), (*bits_shape[:-1], len(cols))
            n_words, n_bit_bytes = 8 * int(np.prod(sub_x)), -(-int(np.prod(sub_bits)) // 8)
            groups.append((q, cols, sub_x, sub_bits, n_words, n_bit_bytes))
    payloads: dict[int, bytearray] = {}
    sizes: dict[int, int] = {}
    flips: dict[int, np.ndarray] = {}  # q -> f on the columns this party owns
    for q, cols, _, _, n_words, n_bit_bytes in groups:
        if rank == q:
            if bits is None:
                raise ValueError(f"party {rank} owns columns {cols.tolist()} but passed no bits")
            flips[q] = bits[..., cols.numpy()].astype(bool) ^ c[..., cols.numpy()]
            for j in range(n_parties):
                if j != q:
                    payloads.setdefault(j, bytearray()).extend(_pack(flips[q]))
                    sizes[j] = sizes.get(j, 0) + n_words
        else:
            d = (share[..., cols] - a[..., cols]).contiguous()
            payloads.setdefault(q, bytearray()).extend(d.numpy().tobytes())
            sizes[q] = sizes.get(q, 0) + n_bit_bytes
    received = comm.exchange({j: bytes(p) for j, p in payloads.items()}, sizes) if groups else {}

    pos = dict.fromkeys(received, 0)
    for q, cols, sub_x, sub_bits, n_words, n_bit_bytes in groups:
        if rank == q:
            total = share[..., cols].clone()
            for j in range(n_parties):
                if j != q:
                    total += _words(received[j][pos[j] : pos[j] + n_words], sub_x)
                    pos[j] += n_words
            f = flips[q]
            ind = torch.from_numpy(bits[..., cols.numpy()].astype(np.int64))
            mine = ind * total
        else:
            f = _unpack(received[q][pos[q] : pos[q] + n_bit_bytes], sub_bits)
            pos[q] += n_bit_bytes
            mine = torch.from_numpy(f.astype(np.int64)) * a[..., cols]
        sign = 1 - 2 * torch.from_numpy(f.astype(np.int64))
        out[..., cols] = (mine + sign * t[q][..., cols]).expand(*out_shape[:-1], len(cols))
    return MPCTensor.from_shares(out, precision=share_math.precision(x))
