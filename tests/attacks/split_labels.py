"""A provider's attack on the public stratified split: label posteriors from ``is_test`` alone.

Why it works (security review F2): sklearn's stratified split uses y only through the
class counts and each row's rank within its class. For a hypothesised count of zeros
``n0`` the attacker replays the split on ``[0]*n0 + [1]*n1`` and learns, for the k-th
zero and the k-th one in row order, whether it lands in test. A forward-backward pass
over "rows of the minority class seen so far", constrained by each row's observed
``is_test`` bit, then gives every row's exact posterior P(y=1).

Prior: the positive count is uniform over the candidates and, given the count, every
label sequence is equally likely; the split is deterministic given y, so a candidate's
likelihood is (#consistent sequences) / C(n, n1).

Cost: a consistent candidate takes O(n * m) time and 8 * n * (m + 1) bytes, m = the
smaller class count (n = 5,000 at 22% positives: ~0.3 s, ~45 MB). A wrong count usually
becomes inconsistent early in the backward pass, so each one costs little more than replaying
sklearn's split (~1.5 ms at n = 3,000). Trying every count (``n_pos_candidates=None``)
is thus ~n replays: ~0.5 s at n = 569, ~5 s at n = 3,000, O(n^2) beyond; pass a window
of plausible counts for larger n.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.special import gammaln, logsumexp

from mpc_fl.data.split import stratified_public_split


def _test_ranks(n0: int, n1: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """For the k-th zero and the k-th one (row order): does it land in test? None if sklearn refuses.

    Counts below 2 are skipped: sklearn refuses a class of one, and one-class data (which
    it would split) cannot be trained on, so no run would draw that split.
    """
    if min(n0, n1) < 2:
        return None
    y = np.r_[np.zeros(n0, np.int64), np.ones(n1, np.int64)]
    try:
        _, test = stratified_public_split(y, test_size, seed)
    except ValueError:  # a class too small for the split: the bank could not have drawn it
        return None
    mask = np.zeros(n0 + n1, dtype=bool)
    mask[test] = True
    return mask[:n0], mask[n0:]


def _posterior_one_count(
    is_test: np.ndarray, t_a: np.ndarray, t_b: np.ndarray
) -> tuple[np.ndarray, float] | None:
    """P(row is class A) and log #consistent sequences, A having the test-rank mask ``t_a``.

    State a = rows of class A among the rows before this one (0..n_a); the row is then
    the a-th A or the (i - a)-th B. Backward messages are stored (scaled per row); the
    forward pass runs on the fly and yields each row's two-way posterior.
    """
    n = len(is_test)
    n_a, n_b = len(t_a), len(t_b)
    a = np.arange(n_a + 1)
    ta = np.r_[t_a, False].astype(np.int8)
    ta[n_a] = 2  # no (n_a)-th A: never matches a bit
    tb = np.r_[t_b, False].astype(np.int8)
    tb[n_b] = 2
    bits = is_test.astype(np.int8)

    def moves(i: int) -> tuple[np.ndarray, np.ndarray]:
        ok_a = ta[a] == bits[i]
        rank_b = i - a
        ok_b = (rank_b >= 0) & (rank_b < n_b) & (tb[np.clip(rank_b, 0, n_b)] == bits[i])
        return ok_a, ok_b

    back = np.empty((n + 1, n_a + 1))  # rows are filled from the end; most candidates die early
    back[n] = 0.0
    back[n, n_a] = 1.0
    log_scale = 0.0
    for i in range(n - 1, -1, -1):
        ok_a, ok_b = moves(i)
        row = np.where(ok_b, back[i + 1], 0.0)
        row[:-1] += np.where(ok_a[:-1], back[i + 1, 1:], 0.0)
        s = row.sum()
        if s == 0.0:
            return None
        back[i] = row / s
        log_scale += np.log(s)
    log_count = log_scale + np.log(back[0, 0])
    if not np.isfinite(log_count):
        return None

    post_a = np.empty(n)
    fwd = np.zeros(n_a + 1)
    fwd[0] = 1.0
    for i in range(n):
        ok_a, ok_b = moves(i)
        go_a = np.where(ok_a[:-1], fwd[:-1], 0.0)
        go_b = np.where(ok_b, fwd, 0.0)
        w_a = float(go_a @ back[i + 1, 1:])
        w_b = float(go_b @ back[i + 1])
        post_a[i] = w_a / (w_a + w_b)
        fwd = go_b
        fwd[1:] += go_a
        fwd /= fwd.sum()
    return post_a, float(log_count)


def stratified_split_posterior(
    is_test: np.ndarray,
    test_size: float,
    seed: int,
    n_pos_candidates: Iterable[int] | None = None,
) -> np.ndarray | None:
    """Each row's posterior P(y=1) given the mask of the public stratified split, or None if no
    label sequence with a candidate positive count is consistent with it.

    ``n_pos_candidates`` None tries every count (about n split replays; see the module docstring).
    """
    is_test = np.asarray(is_test, dtype=bool)
    n = len(is_test)
    candidates = range(2, n - 1) if n_pos_candidates is None else n_pos_candidates
    posts, log_weights = [], []
    for n1 in sorted(set(int(c) for c in candidates)):
        n0 = n - n1
        ranks = _test_ranks(n0, n1, test_size, seed)
        if ranks is None:
            continue
        t0, t1 = ranks
        ones_are_a = n1 <= n0  # the DP's state counts the smaller class
        res = _posterior_one_count(is_test, t1, t0) if ones_are_a else _posterior_one_count(is_test, t0, t1)
        if res is None:
            continue
        post_a, log_count = res
        posts.append(post_a if ones_are_a else 1.0 - post_a)
        log_choose = gammaln(n + 1) - gammaln(n1 + 1) - gammaln(n0 + 1)
        log_weights.append(log_count - log_choose)
    if not posts:
        return None
    w = np.exp(np.asarray(log_weights) - logsumexp(log_weights))
    return np.clip(w @ np.vstack(posts), 0.0, 1.0)


def certain_rows(posterior: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Positions whose label the attacker knows for sure (posterior 0 or 1 up to ``tol``)."""
    posterior = np.asarray(posterior)
    return np.flatnonzero((posterior <= tol) | (posterior >= 1.0 - tol))


def n_certain(posterior: np.ndarray, tol: float = 1e-9) -> int:
    """How many rows are known with certainty."""
    return len(certain_rows(posterior, tol))
