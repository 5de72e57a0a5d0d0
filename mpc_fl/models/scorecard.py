"""Scorecard points: the bank's scale for scores (points to double the odds, a base score at base odds).

Why: a bank reports and sets cut-offs in points, not probabilities. With ``factor = pdo / ln 2``
and ``offset = base_score - factor * ln(base_odds)``, an applicant's points are
``offset + factor * ln(odds)``, where ``odds`` are the model's odds of the outcome the points
reward (``higher="y1"``: of y = 1, e.g. "repaid" or "took up"; ``"y0"``: of y = 0, e.g. not
defaulting). Every ``pdo`` points double the odds. Computed by the bank from its scores, locally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HIGHER = ("y1", "y0")


@dataclass(frozen=True)
class Scorecard:
    pdo: float = 20.0
    base_score: float = 600.0
    base_odds: float = 50.0
    higher: str = "y1"

    def __post_init__(self) -> None:
        if not self.pdo > 0:
            raise ValueError(f"scorecard pdo (points to double the odds) must be > 0, got {self.pdo}")
        if not self.base_odds > 0:
            raise ValueError(f"scorecard odds (the odds at the base score) must be > 0, got {self.base_odds}")
        if self.higher not in HIGHER:
            raise ValueError(
                f"scorecard higher={self.higher!r}: choose y1 or y0 (the outcome more points mean)"
            )

    @classmethod
    def parse(cls, text: str) -> Scorecard:
        """From ``pdo=20,base=600,odds=50,higher=y1`` (any subset; the rest default)."""
        names = {"pdo": "pdo", "base": "base_score", "odds": "base_odds", "higher": "higher"}
        values: dict = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in names:
                raise ValueError(f"--scorecard {text!r}: expected pdo=..,base=..,odds=..,higher=y1|y0")
            values[names[key]] = value if key == "higher" else float(value)
        return cls(**values)

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * math.log(self.base_odds)

    def points(self, margin: np.ndarray) -> np.ndarray:
        """Points from the model's margins (log-odds of y = 1)."""
        log_odds = np.asarray(margin, dtype=np.float64) * (1.0 if self.higher == "y1" else -1.0)
        return self.offset + self.factor * log_odds

    def points_of_probability(self, p: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
        return self.points(np.log(p / (1 - p)))
