"""Vertical datasets: the bank's and the providers' tables, the public reference split and scaling.

The centralised helpers here (:func:`join_on_ids`) exist for the plaintext baseline
only; party processes never join tables, they align rows with PSI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpc_fl.config import data_root
from mpc_fl.data.errors import DataError
from mpc_fl.data.party_table import PartyTable, load_party_csv
from mpc_fl.data.split import stratified_public_split

FATE_DATASETS = ("default_credit", "breast")

#: The public reference split under its old name (plaintext baseline, tests, benchmarks). It leaks
#: labels to whoever sees the test mask: see :func:`mpc_fl.data.split.stratified_public_split`.
stratified_split = stratified_public_split


def fate_pair_paths(name: str, root: Path | None = None) -> tuple[Path, Path]:
    """Paths of a FATE-style pair: ``guest.csv`` (the bank, with labels) and ``host.csv`` (provider)."""
    folder = (root or data_root()) / name
    if not folder.is_dir():
        raise DataError(f"dataset {name!r} not found at {folder} (set MPC_FL_DATA to the data folder)")
    return folder / "guest.csv", folder / "host.csv"


def load_fate_pair(name: str, root: Path | None = None) -> tuple[PartyTable, PartyTable]:
    guest, host = fate_pair_paths(name, root)
    return load_party_csv(guest, role="bank"), load_party_csv(host, role="provider")


def common_rows_sorted(ids_self: np.ndarray, ids_common: np.ndarray) -> np.ndarray:
    """Positions of ``ids_common`` in ``ids_self``, ordered by id ascending (the reference order)."""
    order = np.argsort(ids_self, kind="stable")
    sorted_ids = ids_self[order]
    wanted = np.sort(ids_common, kind="stable")
    pos = np.searchsorted(sorted_ids, wanted)
    if np.any(pos >= len(sorted_ids)) or np.any(sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] != wanted):
        raise DataError("some common ids are not in this party's table")
    return order[pos]


def join_on_ids(bank: PartyTable, *providers: PartyTable) -> tuple[PartyTable, ...]:
    """Plaintext inner join on id, sorted ascending (centralised baseline and tests only)."""
    common = bank.ids
    for p in providers:
        common = np.intersect1d(common, p.ids)
    if len(common) == 0:
        raise DataError("the parties have no customers in common")
    return tuple(t.take(common_rows_sorted(t.ids, common)) for t in (bank, *providers))


@dataclass(frozen=True)
class Standardizer:
    """Per-column z-scoring with statistics from the training rows only."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        std = X.std(axis=0)
        return cls(mean=X.mean(axis=0), scale=np.where(std > 0, std, 1.0))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale


@dataclass(frozen=True)
class RobustScaler:
    """Median/IQR scaling clipped to ±5, then standardised (and bounded): what the LR family trains on.

    Why: heavy-tailed features (amounts, ratios) standardised by their mean and standard
    deviation leave typical rows at tiny values and a few rows at hundreds of standard
    deviations; gradient descent then needs a huge weight and many iterations, and secure
    fixed-point arithmetic needs headroom. Centring at the median and dividing by the
    interquartile range (the standard deviation where the IQR is 0, as for rare flags),
    clipping to ±``clip`` and standardising again gives every column unit variance and a
    bounded range. Each party fits it on its own training rows; a column that is constant
    there becomes all zeros. Scoring rows are clipped the same way, so they cannot wrap either.
    """

    median: np.ndarray
    scale: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    clip: float = 5.0
    #: bound after standardising; only columns that are constant but for under 0.1% of rows reach it
    bound: float = 32.0

    @classmethod
    def fit(cls, X: np.ndarray, clip: float = 5.0) -> RobustScaler:
        median = np.median(X, axis=0)
        iqr = (np.percentile(X, 75, axis=0) - np.percentile(X, 25, axis=0)) / 1.349  # = std for a normal
        std = X.std(axis=0)
        scale = np.where(iqr > 1e-12 * (np.abs(median) + 1), iqr, np.where(std > 0, std, 1.0))
        Z = np.clip((X - median) / scale, -clip, clip)
        z_std = Z.std(axis=0)
        return cls(median, scale, Z.mean(axis=0), np.where(z_std > 0, z_std, 1.0), clip)

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = np.clip((X - self.median) / self.scale, -self.clip, self.clip)
        return np.clip((Z - self.mean) / self.std, -self.bound, self.bound)


@dataclass(frozen=True)
class NoScaling:
    """The values as given (``scaling=none`` for the LR family)."""

    @classmethod
    def fit(cls, X: np.ndarray) -> NoScaling:
        return cls()

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)


SCALINGS = {"standard": Standardizer, "robust": RobustScaler, "none": NoScaling}


def scaler_state(scaler: Standardizer | RobustScaler | NoScaling) -> tuple[dict, dict[str, np.ndarray]]:
    """A fitted scaler as JSON-able facts and arrays (for a party's saved model part)."""
    kind = next(k for k, cls in SCALINGS.items() if isinstance(scaler, cls))
    arrays = {f"scaler.{k}": v for k, v in scaler.__dict__.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in scaler.__dict__.items() if not isinstance(v, np.ndarray)}
    return {"kind": kind, **rest}, arrays


def scaler_from_state(meta: dict, arrays: dict[str, np.ndarray]) -> Standardizer | RobustScaler | NoScaling:
    values = {k.removeprefix("scaler."): v for k, v in arrays.items() if k.startswith("scaler.")}
    return SCALINGS[meta["kind"]](**values, **{k: v for k, v in meta.items() if k != "kind"})
