"""Scoring metrics for the referral shortlist: AUC, KS, accuracy, log-loss, precision@k, lift@k."""

from __future__ import annotations

import numpy as np


def _roc(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="mergesort")
    y_sorted, s_sorted = y[order], score[order]
    distinct = np.r_[np.flatnonzero(np.diff(s_sorted)), len(y) - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(tps[-1], 1)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1)]
    return fpr, tpr


def _check(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.float64).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != score.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {score.shape}")
    if not np.isfinite(score).all():
        raise ValueError("scores contain NaN or infinite values")
    return y, score


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties counted as half, like scikit-learn)."""
    y, score = _check(y, score)
    fpr, tpr = _roc(y, score)
    return float(np.trapezoid(tpr, fpr))


def ks(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic: max |TPR - FPR| over thresholds (credit-scoring standard)."""
    y, score = _check(y, score)
    fpr, tpr = _roc(y, score)
    return float(np.max(np.abs(tpr - fpr)))


def accuracy(y: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> float:
    y, proba = _check(y, proba)
    return float(np.mean((proba >= threshold) == (y == 1)))


def log_loss(y: np.ndarray, proba: np.ndarray, eps: float = 1e-12) -> float:
    y, proba = _check(y, proba)
    p = np.clip(proba, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def precision_at_k(y: np.ndarray, score: np.ndarray, k: int) -> float:
    """Share of positives among the k highest-scored rows: the hit rate of a k-name shortlist."""
    y, score = _check(y, score)
    if not 0 < k <= len(y):
        raise ValueError(f"k must be in [1, {len(y)}], got {k}")
    top = np.argsort(-score, kind="mergesort")[:k]
    return float(y[top].mean())


def lift_at_k(y: np.ndarray, score: np.ndarray, k: int) -> float:
    """precision@k over the base rate: how much better the shortlist is than a random one."""
    base = float(np.mean(y))
    return precision_at_k(y, score, k) / base if base > 0 else float("nan")


def summary(y: np.ndarray, proba: np.ndarray, top_fraction: float = 0.1) -> dict[str, float]:
    """All metrics at once, with k = ``top_fraction`` of the rows for precision/lift."""
    k = max(1, int(round(top_fraction * len(y))))
    return {
        "auc": auc(y, proba),
        "ks": ks(y, proba),
        "accuracy": accuracy(y, proba),
        "log_loss": log_loss(y, proba),
        f"precision_at_{int(top_fraction * 100)}pct": precision_at_k(y, proba, k),
        f"lift_at_{int(top_fraction * 100)}pct": lift_at_k(y, proba, k),
    }
