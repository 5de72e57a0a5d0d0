"""The review's seed-search attack on a fixed-mask opening (security review F1).

The non-owner of a fixed-mask matrix legitimately receives ``E = M - A``. If ``A`` is the
first draw of a stream with a small seed space, trying every seed and keeping those where
``E[0,0] + A_s[0,0]`` is a plausible plaintext recovers the seed, then ``M = E + A_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from mpc_fl.crypto.prg import PRG

#: LR features: |x| <= 256 at 12 fractional bits, so |M[0,0]| < 2^21 (false positives ~2^-43 per seed).
LR_PLAUSIBLE = 2**21


def mt19937_first_element(seed: int, shape: tuple[int, ...] = (1,)) -> torch.Tensor:
    """What CrypTen's ``generate_random_ring_element`` drew first from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**63), 2**63 - 1, shape, generator=g, dtype=torch.long)


def chacha_first_element(seed: int, shape: tuple[int, ...] = (1,)) -> torch.Tensor:
    """The first draw of our PRG if its key had only 32 unknown bits (the rest zero)."""
    return PRG(int(seed).to_bytes(4, "little") + bytes(28)).ring_elements(shape)


FAMILIES: dict[str, Callable[[int, tuple[int, ...]], torch.Tensor]] = {
    "mt19937": mt19937_first_element,
    "chacha20-32bit-key": chacha_first_element,
}


def plausible_lr(v: int) -> bool:
    return abs(v) < LR_PLAUSIBLE


def plausible_indicator(v: int) -> bool:
    return v in (0, 1)


def search(E: torch.Tensor, plausible: Callable[[int], bool], family: str, seeds: Iterable[int]) -> list[int]:
    """Seeds of ``family`` under which ``E + A_s`` starts with a plausible plaintext (first two entries)."""
    draw = FAMILIES[family]
    e = E.reshape(-1)[:2]
    hits = []
    for s in seeds:
        a = draw(s, (2,))
        if all(plausible(int(v)) for v in (e + a).tolist()):
            hits.append(s)
    return hits


def recover(E: torch.Tensor, family: str, seed: int) -> torch.Tensor:
    """``M = E + A_s``: the whole matrix once the seed is known."""
    return E + FAMILIES[family](seed, tuple(E.shape))
