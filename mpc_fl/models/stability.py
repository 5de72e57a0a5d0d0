"""Population stability: has the population being scored drifted from the one the model learned on?

Why: a bank monitors each input and the score between the training rows and the rows it scores
now; past a population stability index of 0.25 the model is commonly held to need review
(0.1 to 0.25: watch). Each party computes it for its own features, locally, from a reference it
kept of its own training rows (decile edges and the share of rows per bin): nothing is sent,
and the reference says no more than the party's own data.

``PSI = sum_b (a_b - e_b) ln(a_b / e_b)`` over bins ``b``, with ``e`` the reference shares and
``a`` the scored rows' shares, each floored at :data:`FLOOR` (an empty bin would be infinite).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

#: bins of the reference (deciles of the training rows)
BINS = 10
#: share floor of an empty bin
FLOOR = 1e-4
#: above this, a feature or the score has drifted enough to warn
WARN = 0.25


@dataclass(frozen=True)
class Reference:
    """Per column: the inner bin edges (``BINS - 1`` quantiles, duplicates kept) and the share of
    reference rows per bin (rows of ``edges[j]`` ties go to the upper bin)."""

    edges: np.ndarray  # (d, BINS - 1)
    shares: np.ndarray  # (d, BINS)

    @classmethod
    def of(cls, X: np.ndarray) -> Reference:
        X = np.asarray(X, dtype=np.float64)
        X = X.reshape(len(X), -1)  # a score vector is one column
        qs = np.linspace(0, 1, BINS + 1)[1:-1]
        edges = np.quantile(X, qs, axis=0).T if len(X) else np.zeros((X.shape[1], BINS - 1))
        return cls(edges, _shares(edges, X))

    def psi(self, X: np.ndarray) -> np.ndarray:
        """One index per column of ``X`` (the same columns, in the same order, as the reference)."""
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        if X.shape[1] != self.edges.shape[0]:
            raise ValueError(f"{X.shape[1]} columns to compare with a reference of {self.edges.shape[0]}")
        e = np.maximum(self.shares, FLOOR)
        a = np.maximum(_shares(self.edges, X), FLOOR)
        return ((a - e) * np.log(a / e)).sum(axis=1)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.edges": self.edges, f"{prefix}.shares": self.shares}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> Reference | None:
        if f"{prefix}.edges" not in arrays:
            return None  # a part saved before stability references were kept
        return cls(arrays[f"{prefix}.edges"], arrays[f"{prefix}.shares"])


def _shares(edges: np.ndarray, X: np.ndarray) -> np.ndarray:
    d = edges.shape[0]
    out = np.zeros((d, BINS))
    if len(X) == 0:
        return out
    for j in range(d):
        bins = np.searchsorted(edges[j], X[:, j], side="right")
        out[j] = np.bincount(bins, minlength=BINS) / len(X)
    return out


def drifted(psi: dict[str, float]) -> list[str]:
    """The names whose index is past :data:`WARN`, worst first."""
    return [k for k, v in sorted(psi.items(), key=lambda kv: -kv[1]) if v > WARN]


class Window:
    """The last ``size`` rows a service scored (this party's own raw features; at the bank also the
    scores), and their stability against the training reference: a running service's drift monitor.

    Thread-safe: the scoring thread adds, an endpoint or a log line reads.
    """

    def __init__(
        self, size: int, names: tuple[str, ...], features: Reference | None, score: Reference | None
    ):
        if size < BINS:
            raise ValueError(f"a stability window needs at least {BINS} rows, got {size}")
        self.size, self.names, self.features, self.score = size, tuple(names), features, score
        self._rows: deque[np.ndarray] = deque(maxlen=size)
        self._scores: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.added = 0

    def add(self, X: np.ndarray, scores: np.ndarray | None = None) -> None:
        if len(X) == 0:
            return
        with self._lock:
            self._rows.extend(np.asarray(X, dtype=np.float64).reshape(len(X), -1))
            if scores is not None:
                self._scores.extend(np.asarray(scores, dtype=np.float64).ravel())
            self.added += len(X)

    def report(self) -> dict:
        """``{"rows": n, "window": size, "features": {name: psi}, "score": psi | None, "drifted": [...]}``
        (indices None until the window holds ``BINS`` rows, or when the part kept no reference)."""
        with self._lock:
            rows = np.array(self._rows) if self._rows else np.zeros((0, len(self.names)))
            scores = np.array(self._scores)
        enough = len(rows) >= BINS
        psi: dict[str, float] = {}
        if enough and self.features is not None:
            psi = {n: round(float(v), 4) for n, v in zip(self.names, self.features.psi(rows), strict=True)}
        score = None
        if len(scores) >= BINS and self.score is not None:
            score = round(float(self.score.psi(scores)[0]), 4)
        past = drifted({**psi, **({"score": score} if score is not None else {})})
        return {"rows": len(rows), "window": self.size, "features": psi, "score": score, "drifted": past}
