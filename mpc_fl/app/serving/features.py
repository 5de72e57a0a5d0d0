"""A party's own features by customer id, read by the scoring service one query at a time."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import numpy as np

#: The longest id the service accepts (longer ones are refused before any party is asked).
MAX_ID_CHARS = 128


def application_rows(raw: object, columns: list[str]) -> dict[str, np.ndarray]:
    """The bank's features of applications given in a request: ``{id: {feature: number, ...}}``.

    Why: an applicant the bank has just met is not in its feature store yet, and an existing
    customer's application may carry fresher figures. Every feature the model was trained on must be
    given, as a finite number, and nothing else; raises ValueError in one line naming what is wrong.
    """
    if not isinstance(raw, dict) or not raw:
        raise ValueError('"applications" is an object {"id": {"feature": number, ...}, ...}')
    out = {}
    for id_, row in raw.items():
        if not isinstance(row, dict):
            raise ValueError(f'application {id_!r}: expected {{"feature": number, ...}}')
        missing = [c for c in columns if c not in row]
        unknown = [c for c in row if c not in columns]
        if missing or unknown:
            said = [f"missing {', '.join(missing)}"] * bool(missing) + [
                f"unknown {', '.join(unknown)}"
            ] * bool(unknown)
            raise ValueError(
                f"application {id_!r}: {'; '.join(said)} (the model's features: {', '.join(columns)})"
            )
        values = [row[c] for c in columns]
        bad = [
            c
            for c, v in zip(columns, values, strict=True)
            if isinstance(v, bool) or not isinstance(v, int | float)
        ]
        if bad or not np.isfinite(np.asarray(values, dtype=np.float64)).all():
            bad = bad or [c for c, v in zip(columns, values, strict=True) if not np.isfinite(v)]
            raise ValueError(f"application {id_!r}: {', '.join(bad)} must be finite numbers")
        out[str(id_)] = np.asarray(values, dtype=np.float64)
    return out


class FeatureStore:
    """A party's own features by customer id, in an SQLite table (one row per id, one column per feature).

    Point it at a real table (``table``, ``id_col``, ``columns``) or build one from the party's
    CSV with :meth:`from_csv`. Only the owning party ever opens it.
    """

    def __init__(self, path: Path, *, table: str = "features", id_col: str = "id", columns: list[str]):
        self.path, self.table, self.id_col, self.columns = Path(path), table, id_col, list(columns)
        self._local = threading.local()
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such feature store")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        return db

    @classmethod
    def from_csv(
        cls, csv: Path, db: Path, *, id_col: str = "id", drop: tuple[str, ...] = ("y",)
    ) -> FeatureStore:
        """Load a party's CSV (validated like any party file) into a fresh SQLite table ``features``."""
        import pandas as pd

        frame = pd.read_csv(csv, dtype={id_col: str})
        columns = [c for c in frame.columns if c != id_col and c not in drop]
        db = Path(db)
        db.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(db)) as con:
            frame[[id_col, *columns]].to_sql("features", con, index=False)
            con.execute(f'CREATE UNIQUE INDEX idx_id ON features("{id_col}")')
            con.commit()
        return cls(db, id_col=id_col, columns=columns)

    def ids(self) -> list[str]:
        """Every id in the store: the bank's decoys are drawn from all of its customers."""
        return [str(r[0]) for r in self._db().execute(f'SELECT "{self.id_col}" FROM "{self.table}"')]

    def rows(self, ids: list[str]) -> tuple[np.ndarray, dict[str, str]]:
        """Features of ``ids`` in that order, and for each id that cannot be served, why (for this party only)."""
        cols = ", ".join(f'"{c}"' for c in [self.id_col, *self.columns])
        found: dict[str, tuple] = {}
        for start in range(0, len(ids), 500):  # SQLite bounds the number of parameters per statement
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            sql = f'SELECT {cols} FROM "{self.table}" WHERE "{self.id_col}" IN ({marks})'
            found |= {str(r[0]): r[1:] for r in self._db().execute(sql, chunk)}
        problems = {}
        X = np.zeros((len(ids), len(self.columns)))
        for i, id_ in enumerate(ids):
            row = found.get(id_)
            if row is None:
                problems[id_] = "unknown id"
            elif any(v is None for v in row):
                missing = [c for c, v in zip(self.columns, row, strict=True) if v is None]
                problems[id_] = f"missing feature(s) {', '.join(missing)}"
            else:
                try:
                    X[i] = np.asarray(row, dtype=np.float64)
                except (TypeError, ValueError):
                    problems[id_] = "a non-numeric feature"
                if not np.isfinite(X[i]).all():
                    problems[id_] = "a non-finite feature"
        return X, problems
