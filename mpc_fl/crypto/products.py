"""Beaver products of CrypTen shares in one opening, each distinct operand opened once.

Why: CrypTen's product opens ``x - a`` and ``y - b`` for every pair, so a tensor that appears
in several products of a step (SS-GBDT's iterates, a comparison bit that selects a whole row)
is opened once per use, and a broadcast operand must first be materialised at the full size.
Here the dealer (:mod:`mpc_fl.crypto.preprocessing`, item ``beaver``) gives one mask ``a_u``
per distinct operand, at the operand's own shape, and ``c_p = a_i * a_j`` (broadcast) per
pair ``(i, j)``; every operand is opened once as ``e_u = x_u - a_u`` (one all-reduce for all
of them), and ``[x_i x_j] = c_p + e_i a_j + a_i e_j + e_i e_j`` (the last term added by party 0).

Security: exactly Beaver's: each opened value is a difference with a fresh uniform mask that
only the dealer knows, used for this opening alone. The dealer learns the shapes and which
operand meets which, which depend only on the public computation.
"""

from __future__ import annotations

from mpc_fl.crypto.secure_crypten import crypten

# isort: split

import torch
from crypten.mpc import MPCTensor

from mpc_fl.crypto.preprocessing import Plan, fetch


def beaver_products(pairs: list[tuple[MPCTensor, MPCTensor]]) -> list[torch.Tensor]:
    """This party's shares of ``x * y`` of the *encoding integers* of each pair (no truncation),
    broadcast like torch; an operand passed as the same object in several pairs is opened once."""
    operands: list[MPCTensor] = []
    slot: dict[int, int] = {}
    for x, y in pairs:
        for t in (x, y):
            if id(t) not in slot:
                slot[id(t)] = len(operands)
                operands.append(t)
    index = [(slot[id(x)], slot[id(y)]) for x, y in pairs]
    shapes = [tuple(t.size()) for t in operands]
    outs = []
    for i, j in index:
        try:
            outs.append(tuple(torch.broadcast_shapes(shapes[i], shapes[j])))
        except RuntimeError as e:
            raise ValueError(f"products need broadcastable shapes, got {shapes[i]} and {shapes[j]}") from e
    plan = Plan()
    plan.add("beaver", [list(s) for s in shapes], [list(p) for p in index])
    *masks, c = fetch(plan, {}).take("beaver")
    masks = [m.view(s) for m, s in zip(masks, shapes, strict=True)]
    comm = crypten.communicator.get()
    opened = comm.all_reduce(
        [(t.share - m).reshape(-1) for t, m in zip(operands, masks, strict=True)], batched=True
    )
    eps = [e.view(s) for e, s in zip(opened, shapes, strict=True)]
    out, start = [], 0
    for (i, j), shape in zip(index, outs, strict=True):
        n = torch.Size(shape).numel()
        z = c[start : start + n].view(shape) + eps[i] * masks[j] + masks[i] * eps[j]
        if comm.get_rank() == 0:
            z = z + eps[i] * eps[j]
        out.append(z)
        start += n
    return out
