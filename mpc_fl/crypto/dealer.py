"""The Beaver-triple dealer: CrypTen's trusted third party (TTP), extended with fixed-mask correlations.

Threat model: semi-honest, and the dealer colludes with no computing party. The dealer
never receives data or shares of data: it only derives randomness from seeds it
shares with each party and sends party 0 the one correction share per request
(CrypTen's TTP design). It therefore learns nothing but the sizes of the requests.

Fixed-mask correlation (see :mod:`mpc_fl.crypto.fixed_mask`): for a matrix ``M`` that one
party owns and that stays fixed (the feature matrix in LR, the bin-indicator matrix in
GBDT), the dealer and the owner derive the same random mask ``A`` once; afterwards each
product with a fresh shared vector needs only a fresh random ``[b]`` and ``[c] = [A^T b]``
(or ``[A b]``), which the dealer produces here.
"""

from __future__ import annotations

import mpc_fl.crypto._crypten_compat  # noqa: F401  (must precede any crypten import)

# isort: split

import torch
from crypten.common.rng import generate_random_ring_element
from crypten.mpc.provider.ttp_provider import TTPServer

MASK_OPS = ("t_matmul", "matmul")

#: The threat model of every protocol whose correlated randomness comes from this dealer.
DEALER_THREAT_MODEL = "semi-honest parties; non-colluding dealer (CrypTen TTP) supplies all triples"


def apply_mask_op(op: str, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``A^T b`` for "t_matmul" (histograms, gradients), ``A b`` for "matmul" (forward pass)."""
    if op == "t_matmul":
        return A.t().matmul(b)
    if op == "matmul":
        return A.matmul(b)
    raise ValueError(f"unknown fixed-mask op {op!r}; expected one of {MASK_OPS}")


class Dealer(TTPServer):
    """CrypTen's TTP server plus two requests: ``fixed_mask_setup`` and ``fixed_mask_triple``."""

    def __init__(self) -> None:
        self._masks: dict[str, torch.Tensor] = {}
        super().__init__()  # serves requests until party 0 shuts down

    def fixed_mask_setup(self, key: str, owner: int, shape: tuple[int, ...]) -> torch.Tensor:
        gen = self._get_generators(device=self.device)[owner]
        self._masks[key] = generate_random_ring_element(tuple(shape), generator=gen)
        return torch.zeros(1, dtype=torch.long)  # acknowledgement: CrypTen's TTP always replies

    def fixed_mask_triple(
        self, key: str, op: str, size_b: tuple[int, ...], rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        b = self._get_additive_PRSS(tuple(size_b))
        A = self._masks[key]
        c = apply_mask_op(op, A if rows is None else A[rows], b)
        return c - self._get_additive_PRSS(c.size(), remove_rank=True)

    def fixed_mask_release(self, key: str) -> torch.Tensor:
        self._masks.pop(key, None)
        return torch.zeros(1, dtype=torch.long)
