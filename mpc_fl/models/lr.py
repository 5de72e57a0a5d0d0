"""Logistic regression by mini-batch gradient descent: the exact schedule the secure protocols run.

The batch order, the step and the sigmoid approximation are defined here once;
the secret-shared and Paillier protocols follow the same schedule, so the plaintext
model is their accuracy oracle ("same algorithm, same schedule").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from mpc_fl.models.params import check_declared, param

#: "poly" is the logistic function by an odd polynomial on [-POLY_BOUND, POLY_BOUND], 0 and 1
#: beyond (one batched sign test and three rounds of products in MPC); "exact" is the logistic
#: function (CrypTen's sigmoid approximates it closely, at ~100 communication calls per
#: evaluation); "hard" is the piecewise-linear clip(0.5 + z/4, 0, 1), tangent at 0; "taylor1" is
#: 0.5 + z/4 (SecretFlow's "t1"), free in MPC, which turns the step into a least-squares step.
SIGMOID_METHODS = ("poly", "exact", "hard", "taylor1")
POLY_BOUND = 4.0
POLY_DEGREE = 5
#: How the LR family's parties scale their columns (mpc_fl.data.vertical.SCALINGS). "robust" is
#: why these models beat an unscaled scikit-learn fit on heavy-tailed data; "none" leaves the
#: values as given, which fixed-point protocols only tolerate for modest magnitudes.
LR_SCALINGS = ("robust", "standard", "none")


def poly_sigmoid_coefficients(bound: float = POLY_BOUND, degree: int = POLY_DEGREE) -> np.ndarray:
    """Coefficients of u, u^3, ... (u = z / bound) fitting sigmoid(z) - 1/2 on [-bound, bound].

    Least squares on a fine grid (deterministic); public, the same at every party.
    """
    u = np.linspace(-1.0, 1.0, 4001)
    powers = np.stack([u**k for k in range(1, degree + 1, 2)], axis=1)
    target = 1.0 / (1.0 + np.exp(-bound * u)) - 0.5
    return np.linalg.lstsq(powers, target, rcond=None)[0]


POLY_COEFFICIENTS = poly_sigmoid_coefficients()


def poly_sigmoid(z: np.ndarray) -> np.ndarray:
    u = np.clip(z / POLY_BOUND, -1.0, 1.0)
    p = 0.5 + sum(c * u ** (2 * k + 1) for k, c in enumerate(POLY_COEFFICIENTS))
    return np.where(z > POLY_BOUND, 1.0, np.where(z < -POLY_BOUND, 0.0, p))


def sigmoid(z: np.ndarray, method: str = "exact") -> np.ndarray:
    if method == "exact":
        return 1.0 / (1.0 + np.exp(-z))
    if method == "poly":
        return poly_sigmoid(z)
    if method == "hard":
        return np.clip(0.5 + 0.25 * z, 0.0, 1.0)
    if method == "taylor1":
        return 0.5 + 0.25 * z
    raise ValueError(f"unknown sigmoid method {method!r}; choose from {SIGMOID_METHODS}")


@dataclass(frozen=True)
class LRParams:
    learning_rate: float = param(0.5, "gradient step size", above=0)
    n_epochs: int = param(
        3, "passes over the training rows (more if needed to reach min_iterations)", at_least=1
    )
    batch_size: int = param(1024, "rows per mini-batch", at_least=1)
    min_iterations: int = param(
        50, "at least this many steps: small data gets more epochs, not fewer steps", at_least=0
    )
    l2: float = param(0.0, "L2 penalty on the weights", at_least=0)
    sigmoid: str = param(
        "poly",
        "poly (odd degree-5 fit of the logistic on [-4, 4], 0 and 1 beyond), exact, "
        "hard (clip(0.5 + z/4, 0, 1)) or taylor1 (0.5 + z/4)",
        choices=SIGMOID_METHODS,
    )
    seed: int = param(0, "public seed of the batch order (the schedule is public; never a secret)")
    scaling: str = param(
        "robust",
        "how each party scales its own columns, on its own training rows, before training: robust "
        "(median/IQR, clipped to +-5, then standardised), standard (mean/std) or none (as given)",
        choices=LR_SCALINGS,
    )

    def validate(self) -> None:
        check_declared(self)

    def to_dict(self) -> dict:
        return asdict(self)


def minibatches(n_rows: int, batch_size: int, n_epochs: int, seed: int) -> Iterator[np.ndarray]:
    """Row positions of each mini-batch: a fresh seeded permutation per epoch, cut into slices.

    The batch schedule is public (it depends only on the row count and a seed), so
    the secure protocols can follow it without revealing anything about the data.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_epochs):
        perm = rng.permutation(n_rows)
        for start in range(0, n_rows, batch_size):
            yield perm[start : start + batch_size]


def n_epochs(n_rows: int, params: LRParams) -> int:
    """Epochs to run: ``n_epochs``, or more when that many would take fewer than ``min_iterations`` steps."""
    per_epoch = -(-n_rows // params.batch_size)
    return max(params.n_epochs, -(-params.min_iterations // per_epoch))


def schedule(n_rows: int, params: LRParams) -> Iterator[np.ndarray]:
    """The mini-batches every LR of this project runs for ``params`` (plaintext and secure alike)."""
    return minibatches(n_rows, params.batch_size, n_epochs(n_rows, params), params.seed)


def n_iterations(n_rows: int, params: LRParams) -> int:
    return n_epochs(n_rows, params) * -(-n_rows // params.batch_size)


def project_signs(w: np.ndarray, monotone: np.ndarray | None) -> np.ndarray:
    """``w`` with each constrained weight moved onto its sign (+1: >= 0, -1: <= 0): projected
    gradient descent keeps a sign-constrained LR monotone in every feature it constrains."""
    if monotone is None:
        return w
    c = np.asarray(monotone)
    return np.where(c > 0, np.maximum(w, 0.0), np.where(c < 0, np.minimum(w, 0.0), w))


class PlainLR:
    """Centralised logistic regression with the shared schedule (float64 numpy).

    ``monotone``: per feature +1, -1 or 0 (:mod:`mpc_fl.models.monotone`); each step is followed
    by :func:`project_signs`.
    """

    def __init__(self, params: LRParams = LRParams(), monotone: np.ndarray | None = None):  # noqa: B008
        self.params = params
        self.monotone = None if monotone is None or not np.any(monotone) else np.asarray(monotone)

    def fit(self, X: np.ndarray, y: np.ndarray) -> PlainLR:
        p = self.params
        p.validate()
        w = np.zeros(X.shape[1])
        b = 0.0
        for rows in schedule(len(y), p):
            residual = sigmoid(X[rows] @ w + b, p.sigmoid) - y[rows]
            w -= p.learning_rate * (X[rows].T @ residual / len(rows) + p.l2 * w)
            w = project_signs(w, self.monotone)
            b -= p.learning_rate * residual.mean()
        self.coef_, self.intercept_ = w, b
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_ + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of y = 1 under the true logistic link (whatever sigmoid trained the model)."""
        return sigmoid(self.decision_function(X), "exact")
