"""Shared fixtures: the real benchmark data (skipped with a reason when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.config import data_root


def _require_dataset(name: str) -> None:
    if not (data_root() / name / "guest.csv").is_file():
        pytest.skip(f"dataset {name!r} not found under {data_root()} (set MPC_FL_DATA)")


@pytest.fixture(scope="session")
def default_credit():
    """default_credit joined on id, split 80/20 (seed 42) and scaled with train statistics."""
    _require_dataset("default_credit")
    return _prepared("default_credit")


@pytest.fixture(scope="session")
def breast():
    _require_dataset("breast")
    return _prepared("breast")


def _prepared(name: str) -> dict[str, np.ndarray]:
    from mpc_fl.data.vertical import Standardizer, join_on_ids, load_fate_pair, stratified_split

    bank, provider = join_on_ids(*load_fate_pair(name))
    X = np.hstack([bank.X, provider.X])
    train, test = stratified_split(bank.y)
    scaler = Standardizer.fit(X[train])
    return {
        "X_train": scaler.transform(X[train]),
        "X_test": scaler.transform(X[test]),
        "y_train": bank.y[train],
        "y_test": bank.y[test],
        "n_bank_features": np.array(bank.X.shape[1]),
    }
