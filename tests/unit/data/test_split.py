"""The bank's train/test split: the default mask says nothing about labels, the public one does.

Security review F2: a provider that receives ``is_test`` from the public stratified split
(seed 42) replays it and reads labels off the mask. These tests run that attacker
(tests/attacks/split_labels.py) against both splits, plus generic estimators against the
default one.

"Noise" below: under the null (score independent of y) an AUC has standard error
sqrt(((n + 1) - sum(t^3 - t) / (n (n - 1))) / (12 n_pos n_neg)), t = sizes of tied score
groups (the Mann-Whitney permutation variance, exact for any fixed scores). A check
fails at 4.5 standard errors: ~7e-6 per check, so a correct split fails this file about
once in 10^4 runs (the random split comes from os.urandom and cannot be seeded).
"""

from __future__ import annotations

import inspect
import itertools
import math

import numpy as np
import pytest

from mpc_fl.config import SPLIT_SEED, SPLIT_TEST_SIZE, data_root
from mpc_fl.data.errors import DataError
from mpc_fl.data.split import (
    SPLIT_HELP,
    SPLITS,
    draw_split,
    random_split,
    stratified_public_split,
)
from mpc_fl.data.vertical import stratified_split
from mpc_fl.metrics import auc
from tests.attacks.split_labels import certain_rows, stratified_split_posterior

Z_NOISE = 4.5
DRAWS = 5


def _mask(n: int, test: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[test] = True
    return m


def _null_se(y: np.ndarray, score: np.ndarray) -> float:
    """Standard error of the AUC when the score is independent of y (tie-corrected)."""
    n, n_pos = len(y), int(np.sum(y))
    n_neg = n - n_pos
    _, t = np.unique(score, return_counts=True)
    ties = float(np.sum(t.astype(float) ** 3 - t)) / (n * (n - 1))
    return math.sqrt(max((n + 1) - ties, 0.0) / (12 * n_pos * n_neg))


def _within_noise(y: np.ndarray, score: np.ndarray) -> tuple[bool, float, float]:
    a, se = auc(y, score), _null_se(y, score)
    ok = (abs(a - 0.5) < Z_NOISE * se) if se > 0 else (a == 0.5)
    return ok, a, se


def _synthetic_labels(n: int = 3000, rate: float = 0.22, seed: int = 7) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < rate).astype(np.int64)


# --- random_split / draw_split -------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 7, 10, 569, 1001])
def test_random_split_sizes_are_right_disjoint_and_cover_all_rows(n: int) -> None:
    train, test = random_split(np.arange(n), 0.2)
    assert len(test) == min(max(round(0.2 * n), 1), n - 1)
    assert np.array_equal(np.sort(np.r_[train, test]), np.arange(n))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # sorted, hence no repeats


def test_random_split_differs_between_calls() -> None:
    ids = np.arange(1000)
    assert not np.array_equal(random_split(ids, 0.2)[1], random_split(ids, 0.2)[1])


def test_random_split_never_sees_labels() -> None:
    assert list(inspect.signature(random_split).parameters) == ["ids", "test_size", "key"]


@pytest.mark.parametrize(("n", "test_size"), [(0, 0.2), (1, 0.2), (10, 0.0), (10, 1.0), (10, -0.1)])
def test_random_split_rejects_degenerate_input(n: int, test_size: float) -> None:
    with pytest.raises(ValueError):
        random_split(np.arange(n), test_size)


def test_a_kept_key_reproduces_the_split_and_another_key_does_not(tmp_path) -> None:
    from mpc_fl.data.split import load_split_key

    ids = np.array([f"sme-{i}" for i in range(2000)])
    path = tmp_path / "bank-split.key"
    key = load_split_key(path)  # made on first use, private to the bank
    assert (path.stat().st_mode & 0o777) == 0o600 and load_split_key(path) == key
    same = random_split(ids, 0.2, key)[1]
    assert np.array_equal(same, random_split(ids, 0.2, key)[1])
    reversed_ids = ids[::-1]  # membership follows the id, not the row order
    assert set(ids[same]) == set(reversed_ids[random_split(reversed_ids, 0.2, key)[1]])
    assert not np.array_equal(same, random_split(ids, 0.2, load_split_key(tmp_path / "other.key"))[1])
    with pytest.raises(ValueError, match="32 bytes"):
        random_split(ids, 0.2, b"short")


def test_draw_split_names_the_choices_for_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="stratified-public"):
        draw_split("stratified", np.arange(10), np.r_[np.zeros(8), np.ones(2)])


def test_stratified_public_is_the_reference_split() -> None:
    y = _synthetic_labels(500)
    ref = stratified_split(y, SPLIT_TEST_SIZE, SPLIT_SEED)
    for got in (draw_split("stratified-public", np.arange(len(y)), y), stratified_public_split(y)):
        assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))


def test_random_split_refuses_a_one_class_side() -> None:
    y = np.r_[np.zeros(9, np.int64), 1]  # one positive: either train or test lacks it
    with pytest.raises(DataError, match="only one class"):
        draw_split("random", np.arange(len(y)), y)


def test_help_text_names_both_splits_and_the_risk() -> None:
    assert all(s in SPLIT_HELP for s in SPLITS) and "public benchmark data" in SPLIT_HELP


def test_split_rows_sends_the_same_mask_to_providers() -> None:
    from mpc_fl.app.party import split_rows
    from mpc_fl.data.party_table import PartyTable
    from mpc_fl.runtime.local import ThreadContext, run_in_threads

    y = _synthetic_labels(300)
    ids = np.arange(300)

    def party(ctx: ThreadContext, method: str) -> tuple[np.ndarray, np.ndarray]:
        t = PartyTable(ctx.role, ids, np.zeros((300, 1)), ("f",), y if ctx.role == "bank" else None)
        return split_rows(ctx, t, method)

    roles = ("bank", "p1", "p2")
    for method in SPLITS:
        out = run_in_threads(lambda ctx, m=method: party(ctx, m), roles)
        (train, test), _ = out["bank"]
        for r in roles[1:]:
            assert np.array_equal(out[r][0][1], test) and np.array_equal(out[r][0][0], train)
        if method == "stratified-public":
            assert np.array_equal(np.sort(stratified_split(y)[1]), test)
    with pytest.raises(ValueError, match="unknown split"):
        run_in_threads(lambda ctx: party(ctx, "nope"), roles)


# --- the attacker itself -------------------------------------------------------------


def test_attack_posterior_is_exact_on_tiny_data() -> None:
    """Brute force over all 2^10 label sequences (uniform count, then uniform sequence): same posterior."""
    n, test_size, seed = 10, 0.3, 3
    masks: dict[bytes, list[tuple[np.ndarray, float]]] = {}
    for bits in itertools.product((0, 1), repeat=n):
        y = np.array(bits)
        if min(y.sum(), n - y.sum()) < 2:
            continue  # sklearn refuses: the bank could not have drawn such a split
        key = _mask(n, stratified_public_split(y, test_size, seed)[1]).tobytes()
        masks.setdefault(key, []).append((y, 1.0 / math.comb(n, int(y.sum()))))
    assert sum(len({int(y.sum()) for y, _ in v}) > 1 for v in masks.values()) > 10  # weighting exercised
    for key, seqs in masks.items():
        w = np.array([p for _, p in seqs])
        want = (w @ np.vstack([y for y, _ in seqs])) / w.sum()
        got = stratified_split_posterior(np.frombuffer(key, dtype=bool), test_size, seed)
        assert got is not None and np.allclose(got, want, atol=1e-12)


# --- positive control: the public stratified split leaks -----------------------------


def _assert_attack_succeeds(y: np.ndarray, candidates: range | None) -> None:
    mask = _mask(len(y), stratified_public_split(y)[1])
    post = stratified_split_posterior(mask, SPLIT_TEST_SIZE, SPLIT_SEED, candidates)
    assert post is not None
    assert abs(post.sum() - y.sum()) < 1e-6  # the exact number of positives
    assert auc(y, post) > 0.8
    sure = certain_rows(post)
    assert len(sure) >= 0.2 * len(y)
    assert np.array_equal(post[sure] > 0.5, y[sure] == 1)  # every "certain" label is right


def test_public_stratified_split_reveals_labels_to_a_provider() -> None:
    _assert_attack_succeeds(_synthetic_labels(3000), None)  # no side information: every count tried


def test_public_stratified_split_reveals_breast_labels() -> None:
    if not (data_root() / "breast" / "guest.csv").is_file():
        pytest.skip(f"dataset 'breast' not found under {data_root()} (set MPC_FL_DATA)")
    from mpc_fl.data.vertical import join_on_ids, load_fate_pair

    bank, _ = join_on_ids(*load_fate_pair("breast"))  # id order, as the pipeline aligns
    _assert_attack_succeeds(bank.y.astype(np.int64), None)


# --- the default split: the same attacker and generic estimators fail -----------------


@pytest.mark.parametrize(("n", "window"), [(600, None), (3000, 25)])
def test_random_split_defeats_the_replay_attack(n: int, window: int | None) -> None:
    """Every count tried (n = 600), or a window around the true count that the attacker is given."""
    y = _synthetic_labels(n)
    n_pos = int(y.sum())
    candidates = None if window is None else range(n_pos - window, n_pos + window + 1)
    for _ in range(DRAWS):  # in practice no label sequence at all is consistent with the mask
        mask = _mask(n, draw_split("random", np.arange(len(y)), y)[1])
        for cands in (candidates, [n_pos]):  # the true count as side information, too
            post = stratified_split_posterior(mask, SPLIT_TEST_SIZE, SPLIT_SEED, cands)
            if post is None:
                continue  # no label sequence explains the mask: the attacker learns nothing
            ok, a, se = _within_noise(y, post)
            assert ok, f"attack AUC {a:.3f} (null se {se:.3f})"


def test_random_mask_carries_no_label_signal() -> None:
    """Score = is_test, and a cross-fitted logistic model of y on (is_test, row position)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = _synthetic_labels(3000)
    pos = np.arange(len(y)) / len(y)
    z = {"is_test": [], "logistic": []}
    for _ in range(DRAWS):
        mask = _mask(len(y), draw_split("random", np.arange(len(y)), y)[1]).astype(float)
        feats = np.c_[mask, pos, mask * pos]
        folds = StratifiedKFold(2, shuffle=True, random_state=0)
        logit = cross_val_predict(LogisticRegression(), feats, y, cv=folds, method="predict_proba")[:, 1]
        for name, score in (("is_test", mask), ("logistic", logit)):
            ok, a, se = _within_noise(y, score)
            assert ok, f"{name}: AUC {a:.3f}, null se {se:.4f}"
            z[name].append((a - 0.5) / se)
    for name, zs in z.items():  # the mean over draws, too: a small consistent bias would show here
        assert abs(np.mean(zs)) * math.sqrt(DRAWS) < Z_NOISE, f"{name}: z-scores {np.round(zs, 2)}"
