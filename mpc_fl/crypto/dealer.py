"""The Beaver-triple dealer: CrypTen's trusted third party (TTP), extended with fixed-mask correlations.

Threat model: semi-honest, and the dealer colludes with no computing party. The dealer
never receives data or shares of data: it holds one 256-bit ChaCha20 key per party
(drawn from ``os.urandom`` and sent over that party's encrypted link,
:mod:`mpc_fl.crypto.secure_crypten`), derives the parties' random shares from those
streams, and sends party 0 the one correction share per request (CrypTen's TTP design).
It learns the sizes of the requests and, for fixed-mask products on row subsets, which
rows are used: the mini-batch schedule, which is public.

Fixed-mask correlation (see :mod:`mpc_fl.crypto.fixed_mask`): for a matrix ``M`` that one
party owns and that stays fixed (the feature matrix in LR, the bin-indicator matrix in
GBDT), the dealer and the owner derive the same random mask ``A`` once; afterwards each
product with a fresh shared vector needs only a fresh random ``[b]`` and ``[c] = [A^T b]``
(or ``[A b]``), which the dealer produces here. A mask too large to hold (SS-GBDT's
million-row bin matrices) is a :class:`RowBlockMask`: the dealer and the owner draw only its
256-bit key from the owner's stream and regenerate ``A`` in row blocks for every product.
"""

from __future__ import annotations

from mpc_fl.crypto.secure_crypten import crypten, generate_random_ring_element

# isort: split

import logging
from collections.abc import Iterator

import torch
from crypten.mpc.provider.ttp_provider import TTP_FUNCTIONS, TTPServer

from mpc_fl.crypto.preprocessing import Plan, dealer_corrections
from mpc_fl.crypto.prg import KEY_BYTES, fill_ring_rows

MASK_OPS = ("t_matmul", "matmul")

#: The threat model of every protocol whose correlated randomness comes from this dealer.
DEALER_THREAT_MODEL = (
    "semi-honest parties; a separate dealer (CrypTen TTP) that colludes with no party supplies all "
    "triples and masks from per-party 256-bit ChaCha20 keys"
)

log = logging.getLogger(__name__)


#: Keystream bytes per numbered piece (one ChaCha20 nonce) of a :class:`RowBlockMask`: part of the mask's
#: definition, so the owner and the dealer must agree on it.
MASK_UNIT_BYTES = 1 << 20
#: Scratch bound for one regenerated row block of a :class:`RowBlockMask` (and one block of ``E`` on the wire).
MASK_BLOCK_BYTES = 1 << 26


def apply_mask_op(op: str, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``A^T b`` for "t_matmul" (histograms, gradients), ``A b`` for "matmul" (forward pass)."""
    if op == "t_matmul":
        if b.dim() == 2:  # the same ring value; torch's int64 matmul is ~10x faster this way round
            return b.t().matmul(A).t().contiguous()
        return A.t().matmul(b)
    if op == "matmul":
        return A.matmul(b)
    raise ValueError(f"unknown fixed-mask op {op!r}; expected one of {MASK_OPS}")


def unit_rows(shape: tuple[int, int]) -> int:
    """Rows per numbered keystream piece of a ``shape`` mask (whole rows, about MASK_UNIT_BYTES)."""
    return max(1, MASK_UNIT_BYTES // (8 * max(1, shape[1])))


def row_blocks(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Row ranges of at most about MASK_BLOCK_BYTES each, aligned to whole pieces; public (shape only)."""
    n, d = shape
    unit = unit_rows(shape)
    per_block = unit * max(1, MASK_BLOCK_BYTES // (unit * 8 * max(1, d)))
    return [(s, min(s + per_block, n)) for s in range(0, n, per_block)]


class RowBlockMask:
    """A uniform ``n x d`` ring mask that nobody holds whole: rows ``[u*R, (u+1)*R)`` are ChaCha20
    stream ``u`` under a 256-bit key (``R = unit_rows(shape)``).

    Why: SS-GBDT's bin matrices at a million rows have masks of gigabytes; the owner and the
    dealer keep only the key (drawn in step from the owner's dealer stream) and regenerate
    the rows they need, one block at a time, for every product.
    """

    def __init__(self, key: bytes, shape: tuple[int, int]):
        self.key, self.shape = bytes(key), (int(shape[0]), int(shape[1]))
        self.unit = unit_rows(self.shape)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """``A[start:stop]``, regenerated."""
        d = self.shape[1]
        out = torch.empty((stop - start, d), dtype=torch.int64)
        r = start
        while r < stop:
            u = r // self.unit
            end = min((u + 1) * self.unit, stop)
            fill_ring_rows(self.key, u, out[r - start : end - start], skip_bytes=8 * d * (r - u * self.unit))
            r = end
        return out

    def blocks(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, A[start:stop])`` for the public row blocks, in order."""
        for start, stop in row_blocks(self.shape):
            yield start, stop, self.rows(start, stop)

    def apply(self, op: str, b: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``apply_mask_op(op, A[rows], b)`` (``rows=None``: all rows), one row block of ``A`` at a time."""
        n, d = self.shape
        rows = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
        n_out = n if rows is None else len(rows)
        if op == "t_matmul":
            out = torch.zeros((d, *b.shape[1:]), dtype=torch.int64)
        elif op == "matmul":
            out = torch.zeros((n_out, *b.shape[1:]), dtype=torch.int64)
        else:
            raise ValueError(f"unknown fixed-mask op {op!r}; expected one of {MASK_OPS}")
        if rows is not None:
            order = torch.argsort(rows)
            ranked = rows[order]
        for start, stop in row_blocks(self.shape):
            if rows is None:
                A, sel = self.rows(start, stop), slice(start, stop)
            else:
                lo, hi = (int(torch.searchsorted(ranked, x)) for x in (start, stop))
                if lo == hi:
                    continue
                A, sel = self.rows(start, stop)[ranked[lo:hi] - start], order[lo:hi]
            if op == "t_matmul":
                out += apply_mask_op(op, A, b[sel])
            else:
                out[sel] = apply_mask_op(op, A, b)
        return out


class Dealer(TTPServer):
    """CrypTen's TTP plus fixed-mask requests, serving only the requests it knows by name."""

    REQUESTS = frozenset(TTP_FUNCTIONS) | {
        "fixed_mask_setup",
        "fixed_mask_key_setup",
        "fixed_mask_triple",
        "fixed_mask_triple_many",
        "fixed_mask_release",
        "plan",
        "batch",
    }

    def __init__(self) -> None:
        # CrypTen's TTPServer.__init__ would re-initialise CrypTen and serve at once; we do both explicitly
        comm = crypten.communicator.get()
        self.ttp_group, self.comm_group = comm.ttp_group, comm.ttp_comm_group
        self.device = "cpu"
        self._masks: dict[str, torch.Tensor | RowBlockMask] = {}
        self._setup_generators()
        self.n_requests = 0

    def serve(self) -> int:
        """Answer party 0's requests until it says "terminate"; return how many were served."""
        comm = crypten.communicator.get()
        ttp_rank = comm.get_ttp_rank()
        while True:
            message = comm.recv_obj(0, self.ttp_group)
            if message == "terminate":
                return self.n_requests
            function = message.get("function") if isinstance(message, dict) else None
            if function not in self.REQUESTS:
                raise ValueError(f"dealer: unknown request {function!r} from party 0")
            result = getattr(self, function)(*message.get("args", ()), **message.get("kwargs", {}))
            comm.send_obj(result.size(), 0, self.ttp_group)
            comm.broadcast(result, ttp_rank, self.comm_group)
            self.n_requests += 1

    def fixed_mask_setup(self, key: str, owner: int, shape: tuple[int, ...]) -> torch.Tensor:
        gen = self._get_generators(device=self.device)[owner]
        self._masks[key] = generate_random_ring_element(tuple(shape), generator=gen)
        return torch.zeros(1, dtype=torch.long)  # acknowledgement: CrypTen's TTP always replies

    def fixed_mask_key_setup(self, key: str, owner: int, shape: tuple[int, ...]) -> torch.Tensor:
        """A mask regenerated in row blocks: only its 256-bit key, drawn in step with the owner."""
        gen = self._get_generators(device=self.device)[owner]
        self._masks[key] = RowBlockMask(gen.prg.random_bytes(KEY_BYTES), tuple(shape))
        return torch.zeros(1, dtype=torch.long)

    def _mask_op(self, key: str, op: str, b: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        A = self._masks[key]
        if isinstance(A, RowBlockMask):
            return A.apply(op, b, rows)
        return apply_mask_op(op, A if rows is None else A[rows], b)

    def fixed_mask_triple(
        self, key: str, op: str, size_b: tuple[int, ...], rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        b = self._get_additive_PRSS(tuple(size_b))
        c = self._mask_op(key, op, b, rows)
        return c - self._get_additive_PRSS(c.size(), remove_rank=True)

    def fixed_mask_triple_many(self, keys: list[str], size_b: tuple[int, ...]) -> torch.Tensor:
        """``[A_q^T b]`` for several masks and one fresh ``[b]``, flattened in order (one opening serves all)."""
        b = self._get_additive_PRSS(tuple(size_b))
        out = []
        for key in keys:
            c = self._mask_op(key, "t_matmul", b)
            out.append((c - self._get_additive_PRSS(c.size(), remove_rank=True)).reshape(-1))
        return torch.cat(out)

    def plan(self, request: dict) -> torch.Tensor:
        """Everything a planned computation will consume, as party 0's corrections (one reply)."""
        streams = [lambda n, g=g: g.prg.ring_elements((n,)) for g in self._get_generators(device=self.device)]
        return dealer_corrections(Plan.from_request(request), streams, self._masks)

    def batch(self, messages: list[dict]) -> torch.Tensor:
        """Several requests in one reply, answered in order (:mod:`mpc_fl.crypto.prefetch`).

        Each item is computed exactly as if it had come alone, from the same streams in the
        same order, so the parties' local draws stay in step.
        """
        out = []
        for message in messages:
            function = message.get("function") if isinstance(message, dict) else None
            if function not in self.REQUESTS or function == "batch":
                raise ValueError(f"dealer: {function!r} cannot be part of a batch")
            result = getattr(self, function)(*message.get("args", ()), **message.get("kwargs", {}))
            out.append(result.reshape(-1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def fixed_mask_release(self, key: str) -> torch.Tensor:
        self._masks.pop(key, None)
        return torch.zeros(1, dtype=torch.long)
