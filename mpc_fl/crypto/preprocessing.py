"""Correlated randomness for a whole computation, delivered by the dealer in one request (the offline phase).

Why: CrypTen asks its dealer for every Beaver triple while it computes, so each secure
product costs a dealer round trip on top of its own opening. When the computation is known
in advance (an SS-LR training run: shapes and the public batch schedule are fixed), the
parties can ask once, before training, for everything it will consume; training then needs
only the openings (Beaver's offline/online split, as in SPDZ-style preprocessing).

A :class:`Plan` is an ordered list of items. Every party draws its shares of each item from
its own dealer stream (ChaCha20, :mod:`mpc_fl.crypto.secure_crypten`) in plan order; the
dealer draws the same streams, computes the correlated values and sends party 0 only the
corrections (party 0's share of each output value), as CrypTen's TTP does per request.
Items (n elements each; rings values in Z_2^64, bits packed eight to a byte):

* ``mul``: a Beaver triple ``a, b, c = a * b``;
* ``matvec``: for a fixed-mask matrix ``A`` (:mod:`mpc_fl.crypto.fixed_mask`), ``b`` (its width) and
  ``c = A[rows] b``;
* ``tmatvec``: ``b`` (one per selected row) and ``c = A[rows]^T b``;
* ``and``: a bit triple ``a, b, c = a & b`` as XOR shares;
* ``cross_and`` (two parties): party 0's mask ``a``, party 1's mask ``b`` (each knows only its
  own, drawn from its own stream) and XOR shares of ``a & b``;
* ``and_b2a``: a bit triple's masks ``a, b`` and a bit ``r`` as XOR shares, and, as arithmetic
  shares, ``D[e, f] = r ^ (a & b) ^ (e & b) ^ (f & a)`` for the four values of public bits
  ``e, f`` (4n ring elements, ``D[2e + f]``): an AND whose result leaves as an arithmetic bit;
* ``b2a``: a random bit ``r`` both as XOR shares and as arithmetic shares;
* ``beaver`` (operand shapes, pairs ``(i, j)``): a mask ``a_u`` per distinct operand and
  ``c_p = a_i * a_j`` (broadcast) per pair: products whose operands repeat or broadcast open
  each operand once, at its own shape (:func:`beaver_products`);
* ``private_bits`` (shapes ``x``, ``bits``; ``P`` parties): each party's own ring values ``a_i``
  (shape ``x``) and own bits ``c_i`` (shape ``bits``), each drawn from its own stream and known
  to nobody else, and for every party ``O`` as owner, arithmetic shares of
  ``t_O = c_O * sum_{i != O} a_i`` (broadcast to the product's shape): a product of a shared
  tensor with party ``O``'s private bits (:mod:`mpc_fl.crypto.private_bits`). Every orientation
  is supplied, so the request does not tell the dealer who owns which bits.

The dealer learns the plan (sizes and the public row schedule), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

KINDS = ("mul", "matvec", "tmatvec", "and", "cross_and", "and_b2a", "b2a", "private_bits", "beaver")


@dataclass
class Plan:
    """What a computation will consume, in order; ``rows`` holds the row subsets items refer to."""

    items: list[tuple] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)

    def add(self, kind: str, *args: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown preprocessing item {kind!r}")
        self.items.append((kind, *args))

    def add_rows(self, rows: np.ndarray) -> int:
        self.rows.append(np.asarray(rows, dtype=np.int64))
        return len(self.rows) - 1

    def to_request(self) -> dict:
        """The dealer request (plain data and tensors only)."""
        return {
            "items": [list(it) for it in self.items],
            "rows": [torch.from_numpy(r.astype(np.int32)) for r in self.rows],
        }

    @classmethod
    def from_request(cls, req: dict) -> Plan:
        return cls([tuple(it) for it in req["items"]], [r.numpy().astype(np.int64) for r in req["rows"]])


# ------------------------------------------------------------------------------------- drawing, one place
RingDraw = Callable[[int], torch.Tensor]  # n uniform ring elements (int64)
BitDraw = Callable[[int], np.ndarray]  # n uniform bits (bool)


def _bits_from(prg_ring: RingDraw, n: int) -> np.ndarray:
    words = prg_ring(-(-n // 64)).numpy().view(np.uint8)
    return np.unpackbits(words, bitorder="little")[:n].astype(bool)


def item_sizes(item: tuple, plan: Plan, mask_shapes: dict[str, tuple[int, int]]) -> list[tuple[str, int]]:
    """The draws of one item, in order: ("ring" | "bits", count); the last is the output party 0 gets corrected."""
    kind = item[0]
    if kind == "mul":
        n = int(item[1])
        return [("ring", n), ("ring", n), ("ring", n)]
    if kind == "matvec":
        key, r = item[1], int(item[2])
        return [("ring", mask_shapes[key][1]), ("ring", len(plan.rows[r]))]
    if kind == "tmatvec":
        key, r = item[1], int(item[2])
        return [("ring", len(plan.rows[r])), ("ring", mask_shapes[key][1])]
    if kind == "and":
        n = int(item[1])
        return [("bits", n), ("bits", n), ("bits", n)]
    if kind == "cross_and":  # one mask per party (its own), then the shares of a & b
        n = int(item[1])
        return [("bits", n), ("bits", n)]
    if kind == "and_b2a":
        n = int(item[1])
        return [("bits", n), ("bits", n), ("bits", n), ("ring", 4 * n)]
    if kind == "b2a":
        n = int(item[1])
        return [("bits", n), ("ring", n)]
    if kind == "beaver":  # a mask per operand, then every pair's product of masks
        shapes, pairs = [tuple(s) for s in item[1]], item[2]
        outs = sum(_numel(torch.broadcast_shapes(shapes[i], shapes[j])) for i, j in pairs)
        return [*(("ring", _numel(s)) for s in shapes), ("ring", outs)]
    if kind == "private_bits":  # own a (x's shape), own c (bits' shape), then every owner's t
        x_shape, bits_shape, n_parties = tuple(item[1]), tuple(item[2]), int(item[3])
        n_out = torch.Size(torch.broadcast_shapes(x_shape, bits_shape)).numel()
        return [("ring", _numel(x_shape)), ("bits", _numel(bits_shape)), ("ring", n_parties * n_out)]
    raise ValueError(f"unknown preprocessing item {kind!r}")


def _numel(shape: tuple) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _draw(draw_ring: RingDraw, what: str, n: int) -> torch.Tensor | np.ndarray:
    return draw_ring(n) if what == "ring" else _bits_from(draw_ring, n)


# ------------------------------------------------------------------------------------- party side
class Preprocessed:
    """A party's shares of every item of a plan, handed out in plan order."""

    def __init__(self, plan: Plan, draw_ring: RingDraw, corrections: bytes | None, mask_shapes: dict):
        """``draw_ring``: this party's dealer stream; ``corrections``: party 0's bytes from the dealer, else None."""
        self.plan = plan
        self._items: list[tuple[str, list]] = []
        buf = memoryview(corrections) if corrections is not None else None
        pos = 0
        for item in plan.items:
            draws = item_sizes(item, plan, mask_shapes)
            values: list = [_draw(draw_ring, w, n) for w, n in draws[:-1]]
            last_kind, last_n = draws[-1]
            if buf is None:
                values.append(_draw(draw_ring, last_kind, last_n))
            else:
                size = 8 * last_n if last_kind == "ring" else -(-last_n // 8)
                chunk = buf[pos : pos + size]
                pos += size
                if last_kind == "ring":
                    values.append(_ring_words(chunk))
                else:
                    values.append(
                        np.unpackbits(np.frombuffer(chunk, np.uint8), bitorder="little")[:last_n].astype(bool)
                    )
            self._items.append((item[0], values))
        self._next = 0

    def take(self, kind: str) -> list:
        """The next item's shares; it must be of ``kind`` (the computation follows its own plan)."""
        got, values = self._items[self._next]
        if got != kind:
            raise RuntimeError(f"preprocessing out of step: expected {kind!r}, next item is {got!r}")
        self._next += 1
        return values

    @property
    def remaining(self) -> int:
        return len(self._items) - self._next


# ------------------------------------------------------------------------------------- dealer side
def dealer_corrections(
    plan: Plan,
    streams: list[RingDraw],
    masks: dict[str, Any],
) -> torch.Tensor:
    """Party 0's corrections for every item, packed into one int64 tensor (the dealer's one reply).

    ``streams``: the parties' dealer streams in rank order (the dealer holds all their keys).
    Plans take dense masks only: a mask regenerated in row blocks (SS-GBDT's bin matrices)
    is refused before anything is drawn.
    """
    for item in plan.items:
        if item[0] in ("matvec", "tmatvec") and not isinstance(masks.get(item[1]), torch.Tensor):
            kind = type(masks[item[1]]).__name__ if item[1] in masks else None
            what = f"a {kind} (regenerated in row blocks)" if kind else "unknown"
            raise TypeError(
                f"preprocessing plan item {item[0]} on mask {item[1]!r}: it is {what}; plans take "
                "dense fixed-mask matrices only (FixedMaskMatrix, not the one-hot OneHotMaskMatrix)"
            )
    shapes = {k: tuple(v.shape) for k, v in masks.items()}
    out = bytearray()

    def ring_total(n: int, parties: list[RingDraw]) -> torch.Tensor:
        total = torch.zeros(n, dtype=torch.int64)
        for s in parties:
            total += s(n)
        return total

    def bits_total(n: int, parties: list[RingDraw]) -> np.ndarray:
        total = np.zeros(n, dtype=bool)
        for s in parties:
            total ^= _bits_from(s, n)
        return total

    for item in plan.items:
        kind = item[0]
        draws = item_sizes(item, plan, shapes)
        w_last, n_last = draws[-1]
        if kind == "cross_and":  # not shared: party 0's own mask a, party 1's own mask b
            if len(streams) != 2:
                raise ValueError("cross ANDs need exactly two computing parties")
            a, b = (_bits_from(s, n_last) for s in streams)
            out += np.packbits((a & b) ^ bits_total(n_last, streams[1:]), bitorder="little").tobytes()
            continue
        if kind == "private_bits":  # not shared: every party's own a_i and c_i
            x_shape, bits_shape = tuple(item[1]), tuple(item[2])
            (_, n_x), (_, n_bits) = draws[:2]
            own = [(s(n_x), _bits_from(s, n_bits)) for s in streams]
            out_shape = torch.broadcast_shapes(x_shape, bits_shape)
            total_a = sum((a for a, _ in own), torch.zeros(n_x, dtype=torch.int64))
            t = []
            for a_o, c_o in own:  # each party as the owner, in rank order
                others = (total_a - a_o).view(x_shape).expand(out_shape)
                c = torch.from_numpy(c_o.astype(np.int64)).view(bits_shape).expand(out_shape)
                t.append((c * others).reshape(-1))
            true = torch.cat(t)
            if true.numel() != n_last:
                raise ValueError(f"private_bits item for {item[3]} parties, the dealer serves {len(streams)}")
            out += (true - ring_total(n_last, streams[1:])).numpy().tobytes()
            continue
        # every stream draws every value but the last; only parties 1..n-1 draw the last one
        firsts = [ring_total(n, streams) if w == "ring" else bits_total(n, streams) for w, n in draws[:-1]]
        if kind == "mul":
            true = firsts[0] * firsts[1]
        elif kind == "matvec":
            A = masks[item[1]][torch.from_numpy(plan.rows[int(item[2])])]
            true = A.matmul(firsts[0])
        elif kind == "tmatvec":
            A = masks[item[1]][torch.from_numpy(plan.rows[int(item[2])])]
            true = A.t().matmul(firsts[0])
        elif kind == "and":
            true = firsts[0] & firsts[1]
        elif kind == "beaver":
            masks = [m.view(tuple(shape)) for m, shape in zip(firsts, item[1], strict=True)]
            true = torch.cat([(masks[i] * masks[j]).reshape(-1) for i, j in item[2]])
        elif kind == "and_b2a":
            a, b, r = firsts
            d = [r ^ (a & b) ^ (e & b) ^ (f & a) for e in (False, True) for f in (False, True)]
            true = torch.from_numpy(np.concatenate(d).astype(np.int64))
        else:  # b2a: the same bit as an arithmetic value
            true = torch.from_numpy(firsts[0].astype(np.int64))
        if w_last == "ring":
            out += (true - ring_total(n_last, streams[1:])).numpy().tobytes()
        else:
            out += np.packbits(true ^ bits_total(n_last, streams[1:]), bitorder="little").tobytes()
    out += bytes(-len(out) % 8)
    return _ring_words(out)


def fetch(plan: Plan, mask_shapes: dict[str, tuple[int, int]]) -> Preprocessed:
    """Collective: party 0 asks the dealer for the plan's corrections; every party draws its shares."""
    import crypten.communicator as comm
    from crypten.mpc.provider.ttp_provider import TTPClient

    client = TTPClient.get()

    def draw(n: int) -> torch.Tensor:
        return client.get_generator().prg.ring_elements((n,))

    corrections = None
    if comm.get().get_rank() == 0:
        corrections = client.ttp_request("plan", None, plan.to_request()).numpy().tobytes()
    return Preprocessed(plan, draw, corrections, mask_shapes)


def _ring_words(data: bytes | bytearray) -> torch.Tensor:
    """int64 words of ``data`` (empty for no bytes: torch.frombuffer refuses those)."""
    return (
        torch.frombuffer(bytearray(data), dtype=torch.int64).clone()
        if data
        else torch.zeros(0, dtype=torch.int64)
    )
