"""Freshness of one-time pads over a party's whole view: statistics that a reused pad cannot pass.

Why: marginal checks (top bits balanced, no small value, a per-row estimator) pass a protocol
that pads every opening with the *same* uniform mask, yet two such openings subtract to a
difference of plaintexts. Under fresh pads every received ring word is uniform and every pair of
words is independent, so:

* :func:`nearest_words`: the smallest circular distance ``|a - b| mod 2^64`` over all pairs of
  received words (sorted neighbours) is not smaller than ``N`` uniform words give;
* :func:`same_position`: the same over pairs of words at the same position of equally long
  vectors (an opening of iteration ``i`` and of iteration ``j``): fewer pairs, so a much larger
  threshold, the place a pad reused across iterations, levels or trees shows;
* :func:`xor_agreement`: two equally long received bit vectors agree in about half their bits.

Thresholds come from the count of pairs by the union bound, so that uniform data raises a false
alarm with probability below :data:`ALPHA`: one pair of uniform words lies within distance ``t``
with probability ``(2t + 1) / 2^64``; two uniform bit vectors of length ``L`` agree in a
Binomial(L, 1/2) number of bits.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

#: Magnitude below which a ring word is a plaintext (a uniform word is below it with probability 2^-31).
SMALL = 2.0**32
#: False-alarm rate of every statistic on uniform data (union bound over its pairs).
ALPHA = 1e-9


@dataclass(frozen=True)
class Finding:
    """A statistic, the bound it must respect, and whether it is flagged (a pad was not fresh)."""

    name: str
    value: float
    bound: float
    pairs: int
    flagged: bool
    where: str = ""

    def __str__(self) -> str:
        verdict = "FLAGGED" if self.flagged else "ok"
        return f"{self.name}: {self.value:.6g} vs bound {self.bound:.6g} over {self.pairs} pairs: {verdict} {self.where}"


def _words(x: np.ndarray) -> np.ndarray:
    """Ring words (int64 or uint64) as uint64, any shape."""
    return np.ascontiguousarray(x).view(np.uint64)


def circular_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``min((a - b), (b - a)) mod 2^64`` elementwise, as uint64."""
    d = _words(a) - _words(b)  # wraps modulo 2^64
    return np.minimum(d, np.uint64(0) - d)


def gap_threshold(pairs: int, alpha: float = ALPHA) -> int:
    """The largest ``t`` with ``pairs * (2t + 1) / 2^64 <= alpha``: a distance ``<= t`` between
    uniform words happens with probability at most ``alpha`` over that many pairs."""
    if pairs < 1:
        return 2**63
    t = (alpha * 2.0**64 / pairs - 1) / 2
    if t < 0:
        raise ValueError(
            f"{pairs} pairs: even an exact repeat is likelier than {alpha} among uniform words; test fewer"
        )
    return int(t)


def nearest_words(vectors: Iterable[np.ndarray], alpha: float = ALPHA) -> Finding:
    """The closest two of all the words (the minimum gap between circular sorted neighbours)."""
    words = np.sort(np.concatenate([_words(v).reshape(-1) for v in vectors] or [np.zeros(0, np.uint64)]))
    n = len(words)
    pairs = n * (n - 1) // 2
    bound = gap_threshold(pairs, alpha)
    if n < 2:
        return Finding("nearest words", 2**63, bound, pairs, False)
    gaps = np.diff(words)  # sorted: each gap is b - a >= 0, exact in uint64
    wrap = (words[:1] - words[-1:])[0]  # the circle's last gap, modulo 2^64
    i = int(np.argmin(gaps))
    value, where = (int(gaps[i]), f"words {words[i]:#x}, {words[i + 1]:#x}")
    if int(wrap) < value:
        value, where = int(wrap), f"words {words[-1]:#x}, {words[0]:#x}"
    return Finding("nearest words", value, bound, pairs, value <= bound, where)


def _groups(vectors: Iterable[np.ndarray]) -> dict[int, list[np.ndarray]]:
    out: dict[int, list[np.ndarray]] = defaultdict(list)
    for v in vectors:
        v = np.asarray(v).reshape(-1)
        if v.size:
            out[v.size].append(v)
    return out


def same_position(vectors: Iterable[np.ndarray], alpha: float = ALPHA) -> Finding:
    """The closest two words at the same position of two equally long vectors."""
    groups = {n: vs for n, vs in _groups(_words(v).reshape(-1) for v in vectors).items() if len(vs) > 1}
    pairs = sum(n * len(vs) * (len(vs) - 1) // 2 for n, vs in groups.items())
    bound = gap_threshold(pairs, alpha)
    best, where = 2**63, ""
    for n, vs in groups.items():
        V = np.stack(vs)
        for i in range(len(V) - 1):
            d = circular_distance(V[i + 1 :], V[i][None, :])
            j, k = np.unravel_index(int(np.argmin(d)), d.shape)
            if int(d[j, k]) < best:
                best, where = (
                    int(d[j, k]),
                    f"length {n}: vectors {i} and {i + 1 + j} of that length, position {k}",
                )
    return Finding("same position", best, bound, pairs, pairs > 0 and best <= bound, where)


def xor_agreement(bit_vectors: Iterable[np.ndarray], alpha: float = ALPHA) -> Finding:
    """The pair of equally long bit vectors whose agreement is furthest from half, in units of its
    bound: ``value > 1`` is flagged (a two-sided binomial tail of ``alpha`` over all pairs).

    Vectors too short to ever be flagged (even total agreement is likelier than the per-pair
    tail) are left out of the test and of its pair count.
    """
    groups = {n: vs for n, vs in _groups(np.asarray(b, bool) for b in bit_vectors).items() if len(vs) > 1}
    every = sum(len(vs) * (len(vs) - 1) // 2 for vs in groups.values())
    shortest = math.log2(2 * max(every, 1) / alpha)  # below it, P(agree = n) = 2^-n exceeds the tail
    groups = {n: vs for n, vs in groups.items() if n > shortest}
    pairs = sum(len(vs) * (len(vs) - 1) // 2 for vs in groups.values())
    worst, where = 0.0, ""
    for n, vs in groups.items():
        exact = np.float32 if n < 2**24 else np.float64  # sums of +-1: exact integers below 2^24 (2^53)
        S = np.stack(vs).astype(exact) * 2 - 1  # S S^T = agreements - disagreements
        gram = S @ S.T
        dev = np.abs(np.triu(gram, 1)) / 2  # |agree - n/2|
        hi = binom.isf(alpha / (2 * pairs), n, 0.5)  # P(agree > hi) <= alpha / (2 pairs), and likewise below
        i, j = np.unravel_index(int(np.argmax(dev)), dev.shape)
        score = float(dev[i, j]) / (hi - n / 2)
        if score > worst:
            agree = (n + float(gram[i, j])) / 2
            worst, where = score, f"length {n}: vectors {i} and {j} of that length agree in {agree:.0f} bits"
    return Finding("xor agreement", worst, 1.0, pairs, worst > 1.0, where)


def split_revealed(vectors: Iterable[np.ndarray], below: float = SMALL) -> tuple[list, list]:
    """(padded, revealed): vectors holding a word below ``below`` in magnitude are plaintexts the
    protocol reveals by design (sizes, acknowledgements, outputs); a uniform word is that small
    with probability 2^-31, so the padded ones lose nothing."""
    padded, revealed = [], []
    for v in vectors:
        small = np.abs(np.asarray(v).astype(np.float64)) < below
        (revealed if small.any() else padded).append(v)
    return padded, revealed


def report(
    ring: Iterable[np.ndarray] = (), bits: Iterable[np.ndarray] = (), alpha: float = ALPHA
) -> list[Finding]:
    """Every statistic over a view: ring vectors (int64/uint64) and bit vectors."""
    ring, bits = list(ring), list(bits)
    out = []
    if ring:
        out += [nearest_words(ring, alpha), same_position(ring, alpha)]
    if bits:
        out.append(xor_agreement(bits, alpha))
    return out


def flagged(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.flagged]


def describe(findings: list[Finding]) -> str:
    return "; ".join(str(f) for f in findings)
