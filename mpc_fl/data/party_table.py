"""One party's table: ids, its own features and (for the bank) the labels.

A vertical dataset is one :class:`PartyTable` per party, keyed by an id column.
Loading validates everything a bank or platform engineer gets wrong in practice,
and fails with a :class:`DataError` that names the file, column and rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mpc_fl.data.errors import DataError

#: "bank-scoring": the bank's file of customers to score with a saved model; labels are optional there;
#: "ids": a list of customers (referred SMEs, product take-ups): only its id column is read
ROLES = ("bank", "provider", "bank-scoring", "ids")


@dataclass(frozen=True)
class PartyTable:
    """Rows of one party, in file order. ``y`` is set only for the label holder (the bank)."""

    role: str
    ids: np.ndarray
    X: np.ndarray
    feature_names: tuple[str, ...]
    y: np.ndarray | None = None
    source: str = ""

    @property
    def n_rows(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> PartyTable:
        """The same table restricted to (and reordered by) ``rows``."""
        return PartyTable(
            role=self.role,
            ids=self.ids[rows],
            X=self.X[rows],
            feature_names=self.feature_names,
            y=None if self.y is None else self.y[rows],
            source=self.source,
        )


def _examples(values: pd.Series | np.ndarray, k: int = 3) -> str:
    """A few values as a user wrote them (87899, 'abc'), not as numpy spells them (np.int64(87899))."""
    return ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in list(values)[:k])


def table_from_frame(
    frame: pd.DataFrame, *, role: str, id_col: str = "id", label_col: str = "y", source: str = "<frame>"
) -> PartyTable:
    """Validate a party's frame and turn it into a :class:`PartyTable`."""
    if role not in ROLES:
        raise DataError(f"unknown role {role!r}: expected one of {ROLES}")
    if frame.shape[0] == 0:
        raise DataError(f"{source}: no data rows (the file is empty or has only a header)")
    if id_col not in frame.columns:
        raise DataError(
            f"{source}: no id column {id_col!r}; columns are {list(frame.columns)[:10]}. "
            f"Pass the right name with --id-col."
        )
    ids = frame[id_col]
    if ids.isna().any():
        raise DataError(f"{source}: {int(ids.isna().sum())} rows have an empty id in column {id_col!r}")
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        raise DataError(
            f"{source}: {dup.nunique()} ids occur more than once in column {id_col!r} "
            f"(e.g. {_examples(dup.unique())}); each customer must appear once"
        )
    if role == "ids":
        id_values = ids.to_numpy()
        id_values = id_values.astype(str) if id_values.dtype == object else id_values
        return PartyTable(
            role=role, ids=id_values, X=np.zeros((len(frame), 0)), feature_names=(), source=source
        )
    y = None
    if role == "bank" or (role == "bank-scoring" and label_col in frame.columns):
        if label_col not in frame.columns:
            raise DataError(f"{source}: the bank's file has no label column {label_col!r}")
        labels = frame[label_col]
        if labels.isna().any():
            raise DataError(
                f"{source}: {int(labels.isna().sum())} rows have no label in column {label_col!r}"
            )
        values = pd.to_numeric(labels, errors="coerce")
        bad = labels[values.isna() | ~values.isin([0, 1])]
        if len(bad):
            raise DataError(
                f"{source}: labels in column {label_col!r} must be 0 or 1; found {_examples(bad.unique())}"
                f" in {len(bad)} rows"
            )
        if values.nunique() < 2 and role == "bank":
            raise DataError(f"{source}: all labels are {int(values.iloc[0])}; need both classes to train")
        y = values.to_numpy(dtype=np.int64)
    elif label_col in frame.columns and role == "provider":
        raise DataError(
            f"{source}: a provider's file must not hold the label column {label_col!r} "
            f"(only the bank holds labels); drop it or rename it"
        )
    feature_cols = [c for c in frame.columns if c not in (id_col, label_col)]
    if role == "provider" and not feature_cols:
        raise DataError(f"{source}: the provider's file has no feature columns")
    for col in feature_cols:
        numeric = pd.to_numeric(frame[col], errors="coerce")
        not_numeric = frame[col][numeric.isna() & frame[col].notna()]
        if len(not_numeric):
            raise DataError(
                f"{source}: column {col!r} is not numeric (e.g. {_examples(not_numeric.unique())}); "
                f"encode categories as numbers first"
            )
        if numeric.isna().any():
            rows = np.flatnonzero(numeric.isna().to_numpy())
            raise DataError(
                f"{source}: column {col!r} has {len(rows)} missing values (first at data row {rows[0] + 1}); "
                f"impute or drop them first"
            )
        if not np.isfinite(numeric.to_numpy(dtype=float)).all():
            raise DataError(f"{source}: column {col!r} has infinite values")
    X = (
        frame[feature_cols].apply(pd.to_numeric).to_numpy(dtype=np.float64)
        if feature_cols
        else np.zeros((len(frame), 0))
    )
    id_values = ids.to_numpy()
    if id_values.dtype == object:
        id_values = id_values.astype(str)
    return PartyTable(
        role=role.removesuffix("-scoring"),
        ids=id_values,
        X=X,
        feature_names=tuple(feature_cols),
        y=y,
        source=source,
    )


def feature_columns(path: str | Path, *, id_col: str = "id", label_col: str = "y") -> list[str]:
    """The feature columns a party file's header names (no row is read): a local run's constraints
    are shared out by them (:func:`mpc_fl.models.monotone.split_among`)."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return []  # the party itself reports the problem with its file, in one line
    return [c for c in header if c not in (id_col, label_col)]


def load_party_csv(path: str | Path, *, role: str, id_col: str = "id", label_col: str = "y") -> PartyTable:
    """Read one party's CSV (header row, comma-separated) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        frame = pd.read_csv(path, dtype={id_col: str}, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None
    ids = frame[id_col] if id_col in frame.columns else None
    if ids is not None and ids.notna().all() and ids.str.fullmatch(r"-?\d{1,18}").all():
        frame[id_col] = ids.astype(np.int64)
    return table_from_frame(frame, role=role, id_col=id_col, label_col=label_col, source=str(path))
