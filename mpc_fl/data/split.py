"""The train/test split the bank draws and announces to the providers as an ``is_test`` mask.

Why a module of its own: the mask is sent to every provider, so it must say nothing
about the labels. The old default, sklearn's stratified split with the public seed 42,
depends on y only through the class counts and each row's rank within its class; a
provider who replays it recovers the positive count and many labels exactly
(../shared/docs/security_review.md F2). The default is now a uniformly random split
keyed by a secret only the bank holds, which is independent of the labels.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from mpc_fl.config import SPLIT_SEED, SPLIT_TEST_SIZE
from mpc_fl.crypto.prg import KEY_BYTES, new_key
from mpc_fl.data.errors import DataError

SPLITS = ("random", "stratified-public")

SPLIT_HELP = (
    "How the bank splits the aligned rows into train and test; every provider learns which rows "
    "are test rows. 'random' (default) picks the test rows by a keyed hash of the ids under a "
    "key only the bank holds (fresh per run, or kept in --split-key to reuse a split): "
    "independent of the labels, so the mask reveals nothing about them. 'stratified-public' is scikit-learn's stratified split with the public seed 42: it "
    "reproduces the reference numbers, but a provider can replay it from the mask and recover "
    "the number of positives and many labels exactly. Use it only on public benchmark data."
)

SPLIT_KEY_HELP = (
    "bank only: file holding the bank's secret split key (made on first use, mode 0600); the same "
    "key and the same customers give the same split, e.g. to compare protocols. Never share it."
)


def _check_sizes(n_rows: int, test_size: float) -> int:
    """Number of test rows: round(test_size * n), kept within [1, n - 1] so neither side is empty."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be strictly between 0 and 1, got {test_size}")
    if n_rows < 2:
        raise ValueError(f"a train/test split needs at least 2 rows, got {n_rows}")
    return min(max(round(test_size * n_rows), 1), n_rows - 1)


def random_split(
    ids: np.ndarray, test_size: float = SPLIT_TEST_SIZE, key: bytes | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test positions: the rows whose keyed hash of the id comes first are test rows.

    The hash is BLAKE2b keyed with 256 bits (a PRF): the test set is a uniformly random
    subset of the right size, independent of the labels (it never sees them), and without
    the key nobody can predict or replay it. ``key=None`` draws a fresh key from the OS; the
    bank may keep a key (``--split-key``) so that several runs, e.g. one per protocol, use
    the same split. The key never leaves the bank.
    """
    n_test = _check_sizes(len(ids), test_size)
    key = new_key() if key is None else key
    if len(key) != KEY_BYTES:
        raise ValueError(f"a split key is {KEY_BYTES} bytes, got {len(key)}")
    tags = np.array(
        [hashlib.blake2b(str(i).encode(), key=key, digest_size=16).digest() for i in ids], dtype="S16"
    )
    order = np.argsort(tags, kind="stable")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def load_split_key(path: Path) -> bytes:
    """The bank's split key (hex) from ``path``, made with fresh OS randomness (mode 0600) if absent."""
    path = Path(path)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_key().hex() + "\n")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise ValueError(f"{path}: not a split key (64 hex digits)") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path}: a split key is {2 * KEY_BYTES} hex digits")
    return key


def stratified_public_split(
    y: np.ndarray, test_size: float = SPLIT_TEST_SIZE, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test positions from sklearn's stratified split with a public seed (the reference split).

    What it reveals: the split is a deterministic function of the class counts and each
    row's rank within its class, so a provider that receives ``is_test`` and knows the
    seed can replay it for every candidate positive count and recover that count and many
    labels exactly (about 30% of the rows on the benchmark data; see
    ``tests/attacks/split_labels.py``). It exists only to reproduce the reference numbers on
    public benchmark data; never use it on private labels.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
    return np.asarray(train), np.asarray(test)


def _require_both_classes(y: np.ndarray, train: np.ndarray, test: np.ndarray) -> None:
    """Refuse a split with a one-class side: training or AUC would be meaningless, not merely noisy.

    Raised at the bank before anything is sent; providers see only that the run stopped,
    which happens only on tiny or extremely imbalanced data.
    """
    for name, rows in (("training", train), ("test", test)):
        if len(np.unique(y[rows])) < 2:
            raise DataError(
                f"the random {name} set ({len(rows)} of {len(y)} rows) holds only one class; "
                "the data are too small or too imbalanced for a train/test split"
            )


def draw_split(
    method: str,
    ids: np.ndarray,
    y: np.ndarray,
    test_size: float = SPLIT_TEST_SIZE,
    key: bytes | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test positions by ``method`` (one of :data:`SPLITS`), drawn by the bank.

    ``key`` (random split only) is the bank's secret split key; ``None`` draws a fresh one.
    """
    if method == "random":
        y = np.asarray(y)
        train, test = random_split(ids, test_size, key)
        _require_both_classes(y, train, test)
        return train, test
    if method == "stratified-public":
        return stratified_public_split(y, test_size, SPLIT_SEED)
    raise ValueError(f"unknown split {method!r}; choose from {SPLITS}")
