"""Products of a party-private fixed matrix with secret-shared vectors, opening the matrix once.

CrypTen's Beaver matmul opens ``M - A`` with a fresh mask on *every* call, so a fixed
``n x d`` matrix costs ``n*d`` ring elements per product (354 MB for a 30000 x 736
histogram, ../shared/docs/crypten.md). Because ``M`` never changes, we open
``E = M - A`` once, with a mask ``A`` that only its owner and the dealer know, and
reuse that correlation: with a fresh dealer pair ``[b]``, ``[c] = [A^T b]``,

    [M^T u] = M^T f  (owner, local)  +  E^T [b]  +  [c],      f = open(u - b)

and likewise ``[M v] = M f + E [b] + [A b]``. Each product then opens only ``u - b``
(n elements), not the matrix. Security: ``E`` and ``f`` are uniformly random ring
elements to everyone but the owner (one-time pads by ``A`` and ``b``, drawn from the
owner's and the parties' ChaCha20 dealer streams), provided the dealer colludes with
nobody; the dealer sees request sizes and the (public) rows of each product.

Fixed point: ``M`` is encoded with ``precision`` fractional bits (0 for 0/1 indicator
matrices, so products need no truncation and cannot wrap), the vectors with CrypTen's
16 bits; results are returned at CrypTen's precision.

One-hot matrices (:class:`OneHotMaskMatrix`, SS-GBDT's bin matrices): the same correlation
and openings, but nobody but the non-owners holds an ``n x D`` matrix. The owner keeps its
bin indices and a 256-bit mask key (``A`` is regenerated in row blocks,
:class:`mpc_fl.crypto.dealer.RowBlockMask`, and so is ``E``, which it sends block by block);
its share is ``M^T (f + b) - A^T b + c`` (``M^T x`` by scatter-adds over the bin indices).
"""

from __future__ import annotations

from mpc_fl.crypto.secure_crypten import crypten, generate_random_ring_element

# isort: split

import itertools

import crypten.communicator as comm
import numpy as np
import torch
from crypten.mpc import MPCTensor
from crypten.mpc.provider.ttp_provider import TTPClient

from mpc_fl.crypto import share_math
from mpc_fl.crypto.dealer import MASK_OPS, RowBlockMask, apply_mask_op, row_blocks
from mpc_fl.crypto.prg import KEY_BYTES

_keys = itertools.count()


def _ring_encode(M: torch.Tensor, precision: int) -> torch.Tensor:
    return torch.round(M.double() * 2**precision).long().contiguous()  # sent as raw memory: must be row-major


class FixedMaskMatrix:
    """A fixed ``n x d`` matrix owned by party ``owner``; collective constructor (all parties call it)."""

    @staticmethod
    def one_hot(
        bins: np.ndarray | torch.Tensor | None, n_bins: int, *, owner: int, n_rows: int, n_features: int
    ) -> OneHotMaskMatrix:
        """The ``n_rows x n_features*n_bins`` 0/1 matrix of bin indices, held without dense copies."""
        return OneHotMaskMatrix(bins, n_bins, owner=owner, n_rows=n_rows, n_features=n_features)

    def __init__(self, M: torch.Tensor | None, *, owner: int, shape: tuple[int, int], precision: int = 16):
        if crypten.cfg.mpc.provider != "TTP":
            raise RuntimeError("fixed-mask products need the dealer (mpc.provider = 'TTP')")
        self.owner, self.shape, self.precision = owner, tuple(shape), precision
        self.key = f"fm{next(_keys)}"
        self.rank = comm.get().get_rank()
        client = TTPClient.get()
        E = torch.empty(self.shape, dtype=torch.long)
        if self.rank == owner:
            if M is None or tuple(M.shape) != self.shape:
                raise ValueError(f"the owner must pass its matrix of shape {self.shape}")
            self._M = _ring_encode(M, precision)
            A = generate_random_ring_element(self.shape, generator=client.get_generator())
            E = self._M - A
            del A
        if self.rank == 0:
            client.ttp_request("fixed_mask_setup", None, self.key, owner, self.shape)
        self.E = comm.get().broadcast(E.contiguous(), owner)  # the one-time opening of M - A

    def _correlation(
        self, op: str, size_b: tuple[int, ...], rows: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This party's ``[b]`` and ``[c] = [A b]`` (or ``[A^T b]``) for one product, from the dealer."""
        client = TTPClient.get()
        b = generate_random_ring_element(size_b, generator=client.get_generator())
        n_out = len(rows) if rows is not None else self.shape[0]
        c_size = (self.shape[1] if op == "t_matmul" else n_out, *size_b[1:])
        if self.rank == 0:
            c = client.ttp_request("fixed_mask_triple", None, self.key, op, size_b, rows)
        else:
            c = generate_random_ring_element(c_size, generator=client.get_generator())
        return b, c

    def _product(self, v: MPCTensor, op: str, rows: torch.Tensor | None) -> MPCTensor:
        b, c = self._correlation(op, tuple(v.size()), rows)
        f = comm.get().all_reduce(v.share - b)  # opens v - b: uniformly random
        return self._result(op, f, b, c, rows, v)

    @staticmethod
    def matmul_many(mats: list[FixedMaskMatrix], vs: list[MPCTensor]) -> list[MPCTensor]:
        """``[M_q v_q]`` for several fixed matrices and their own vectors, opened in one round.

        Why: the oblivious GBDT routes rows with every party's bin matrix at once; each
        ``v_q - b_q`` is a one-time pad of its own, so sending them together changes only the
        round count.
        """
        pairs = [m._correlation("matmul", tuple(v.size()), None) for m, v in zip(mats, vs, strict=True)]
        masked = torch.cat([(v.share - b).reshape(-1) for v, (b, _) in zip(vs, pairs, strict=True)])
        f = comm.get().all_reduce(masked)
        out, start = [], 0
        for m, v, (b, c) in zip(mats, vs, pairs, strict=True):
            part = f[start : start + b.numel()].reshape(b.shape)
            out.append(m._result("matmul", part, b, c, None, v))
            start += b.numel()
        return out

    def _result(
        self,
        op: str,
        f: torch.Tensor,
        b: torch.Tensor,
        c: torch.Tensor,
        rows: torch.Tensor | None,
        v: MPCTensor,
    ) -> MPCTensor:
        """This party's share of the product as a tensor at the vector ``v``'s scale."""
        out = MPCTensor.from_shares(self.combine(op, f, b, c, rows), precision=share_math.precision(v))
        if self.precision > 0:
            out = out.div(2**self.precision)  # back to the vector's scale (CrypTen's truncation)
        return out

    def combine(
        self, op: str, f: torch.Tensor, b: torch.Tensor, c: torch.Tensor, rows: torch.Tensor | None
    ) -> torch.Tensor:
        """This party's share of the product at scale (matrix bits + vector bits), before truncation.

        Local: ``E^T b + c`` (+ ``M^T f`` at the owner), from the opened ``f = v - b`` and the
        party's own ``[b], [c]``.
        """
        E = self.E if rows is None else self.E[rows]
        share = apply_mask_op(op, E, b) + c
        if self.rank == self.owner:
            M = self._M if rows is None else self._M[rows]
            share = share + apply_mask_op(op, M, f)
        return share

    def t_matmul(self, u: MPCTensor, rows: torch.Tensor | None = None) -> MPCTensor:
        """``[M[rows]^T u]`` for a shared ``u`` with one element (or row) per selected row of M."""
        return self._product(u, "t_matmul", rows)

    def matmul(self, v: MPCTensor, rows: torch.Tensor | None = None) -> MPCTensor:
        """``[M[rows] v]`` for a shared ``v`` of d (or d x k) elements."""
        return self._product(v, "matmul", rows)

    @staticmethod
    def t_matmul_many(mats: list[FixedMaskMatrix], u: MPCTensor) -> list[MPCTensor]:
        """``[M_q^T u]`` for several fixed matrices (any owners) with one opening of ``u - b``.

        Why: a histogram needs every party's bin matrix times the same ``u``; one fresh ``[b]``
        serves them all (the dealer returns ``[A_q^T b]`` for each mask), so ``u`` is opened
        once instead of once per matrix. ``f = u - b`` is still a one-time pad of ``u``.
        """
        client = TTPClient.get()
        rank = comm.get().get_rank()
        size_b = tuple(u.size())
        b = generate_random_ring_element(size_b, generator=client.get_generator())
        c_sizes = [(m.shape[1], *size_b[1:]) for m in mats]
        if rank == 0:
            flat = client.ttp_request("fixed_mask_triple_many", None, [m.key for m in mats], size_b)
            cs, start = [], 0
            for size in c_sizes:
                n = torch.Size(size).numel()
                cs.append(flat[start : start + n].reshape(size))
                start += n
        else:
            cs = [generate_random_ring_element(size, generator=client.get_generator()) for size in c_sizes]
        f = comm.get().all_reduce(u.share - b)  # the one opening
        return [m._result("t_matmul", f, b, c, None, u) for m, c in zip(mats, cs, strict=True)]

    def release(self) -> None:
        """Let the dealer drop its copy of the mask (collective)."""
        if self.rank == 0:
            TTPClient.get().ttp_request("fixed_mask_release", None, self.key)


def _one_hot_op(op: str, cols: torch.Tensor, n_bins: int, x: torch.Tensor) -> torch.Tensor:
    """``M^T x`` ("t_matmul") or ``M x`` ("matmul") for the 0/1 matrix with bin ``cols[j, i]`` of
    feature ``j`` set in row ``i``: scatter-adds / gathers, one feature at a time (no n x D copy)."""
    d, n = cols.shape
    if op == "t_matmul":
        out = torch.zeros((d * n_bins, *x.shape[1:]), dtype=torch.int64)
        for j in range(d):
            out.index_add_(0, cols[j].long() + j * n_bins, x)
        return out
    if op == "matmul":
        out = torch.zeros((n, *x.shape[1:]), dtype=torch.int64)
        for j in range(d):
            out += x.index_select(0, cols[j].long() + j * n_bins)
        return out
    raise ValueError(f"unknown fixed-mask op {op!r}; expected one of {MASK_OPS}")


class OneHotMaskMatrix(FixedMaskMatrix):
    """A party's one-hot bin matrix (n x d*n_bins, one 1 per feature block per row) as a fixed-mask matrix.

    Why: at a million rows the dense path holds ``M``, ``A`` and ``E`` (n x D int64 each) at the
    owner and ``A`` at the dealer, tens of gigabytes. Here the owner keeps only its bin indices
    and the key of a :class:`RowBlockMask` (the dealer keeps the key too); only the non-owners
    hold ``E = M - A``, received in row blocks. Products, openings and the dealer's
    correlations are those of :class:`FixedMaskMatrix` on the same matrix (precision 0).
    """

    def __init__(
        self,
        bins: np.ndarray | torch.Tensor | None,
        n_bins: int,
        *,
        owner: int,
        n_rows: int,
        n_features: int,
    ):
        if crypten.cfg.mpc.provider != "TTP":
            raise RuntimeError("fixed-mask products need the dealer (mpc.provider = 'TTP')")
        self.owner, self.precision, self.n_bins = owner, 0, int(n_bins)
        self.shape = (int(n_rows), int(n_features) * self.n_bins)
        self.key = f"fm{next(_keys)}"
        self.rank = comm.get().get_rank()
        client = TTPClient.get()
        blocks = row_blocks(self.shape)
        self.E: torch.Tensor | None = None
        self._cols: torch.Tensor | None = None
        self._mask: RowBlockMask | None = None
        if self.rank == owner:
            if bins is None or tuple(bins.shape) != (n_rows, n_features):
                raise ValueError(f"the owner must pass its bin indices of shape {(n_rows, n_features)}")
            # (d, n): one contiguous row per feature
            cols = torch.as_tensor(np.asarray(bins)).t().contiguous()
            if len(cols) and (int(cols.min()) < 0 or int(cols.max()) >= n_bins):
                raise ValueError(f"bin indices must lie in [0, {n_bins})")
            self._cols = cols.to(torch.int16 if n_bins <= 2**15 else torch.int64)
            self._mask = RowBlockMask(client.get_generator().prg.random_bytes(KEY_BYTES), self.shape)
        if self.rank == 0:
            client.ttp_request("fixed_mask_key_setup", None, self.key, owner, self.shape)
        if self.rank == owner:
            offsets = torch.arange(n_features, dtype=torch.long) * self.n_bins
            for start, stop, A in self._mask.blocks():  # E = M - A, one block at a time, in place
                E = A.neg_()
                cols_blk = self._cols[:, start:stop].t().long() + offsets
                E.scatter_add_(1, cols_blk, torch.ones_like(cols_blk))
                comm.get().broadcast(E, owner)
        else:
            self.E = torch.empty(self.shape, dtype=torch.long)
            for start, stop in blocks:
                comm.get().broadcast(self.E[start:stop], owner)  # received in place

    def combine(
        self, op: str, f: torch.Tensor, b: torch.Tensor, c: torch.Tensor, rows: torch.Tensor | None
    ) -> torch.Tensor:
        """As :meth:`FixedMaskMatrix.combine`; the owner computes ``M^T (f + b) - A^T b + c`` without ``E``."""
        if self.rank != self.owner:
            return super().combine(op, f, b, c, rows)
        cols = self._cols if rows is None else self._cols[:, rows]
        return _one_hot_op(op, cols, self.n_bins, f + b) - self._mask.apply(op, b, rows) + c

    def release(self) -> None:
        """Let the dealer drop the mask key, and drop this party's own state (collective)."""
        super().release()
        self.E = self._cols = self._mask = None
