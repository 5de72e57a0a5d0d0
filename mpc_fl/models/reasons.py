"""Reason codes: which inputs pushed an application's score toward the adverse outcome, and by how much.

Why: a bank that declines an applicant must give the principal reasons (ECOA / Reg B as the
CFPB reads it, circulars 2022-03 and 2023-03), also when some inputs are a partner's that the
bank never sees. A reason is a *unit*: one of the bank's own features, or what a provider
chose to release of its own (:class:`Release`): each feature, named groups of features, or one
aggregate for all of them.

For logistic regression a unit's contribution is ``sum_{j in unit} w_j (x_j - ref_j)`` against a
reference applicant ``ref`` (the mean of the training rows, each party its own): the margin is
the reference margin plus the contributions, exactly. The reasons are the ``R`` units with the
largest contributions toward the adverse outcome, ties to the unit listed first.

For trees it is Saabas's path attribution (the "approximate contributions" XGBoost offers beside
TreeSHAP): along a row's path, each split moves the prediction from its node's value to its
child's, and that change goes to the unit of the split's feature; the margin is the base margin
plus every tree's root value plus the contributions, exactly. A node's value is what it would
predict as a leaf, ``lr * -G/(H + lambda)`` over its training rows (:attr:`Tree.node_values`).
Why Saabas and not path-dependent TreeSHAP: it needs only the row's own path and one value per
node, which a secure protocol computes as a product of path indicators with shared differences
(one product round); TreeSHAP's sum over feature subsets along every path would multiply the
secure work by the tree's depth and the number of paths. Its known bias (splits near the root
weigh more) matters less for ranking a few reasons than for exact attribution.

This module is the plaintext definition every protocol's reasons are measured against
(:mod:`mpc_fl.crypto.reasons` ranks the same contributions on shares).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpc_fl.models.gbdt import NO_SPLIT, Tree

#: what a provider releases of its own features as reasons
RELEASES = ("feature", "group", "none")
#: the outcome a reason argues for (a decline rests on it): y = 1 (e.g. default) or y = 0
ADVERSE = ("y1", "y0")
#: reasons per application unless asked otherwise
DEFAULT_REASONS = 4


@dataclass(frozen=True)
class Release:
    """A party's choice of what it releases as reasons: ``level`` and, for "group", its named groups.

    Groups map a name the bank may print ("delivery activity") to the party's own feature names;
    features in no group form one more group, ``other``. The grouping itself never leaves the
    party: only the group names do.
    """

    level: str = "none"
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: the name of the single unit under "none" (and the prefix of "other" under "group")
    label: str = "partner data"

    def __post_init__(self) -> None:
        if self.level not in RELEASES:
            raise ValueError(f"release {self.level!r}: choose from {', '.join(RELEASES)}")
        if self.groups and self.level != "group":
            raise ValueError(f"feature groups are for release 'group', not {self.level!r}")
        if self.level == "group" and not self.groups:
            raise ValueError("release 'group' needs named groups of features (--groups FILE)")

    @classmethod
    def read(cls, level: str, groups_file: str | None, label: str = "partner data") -> Release:
        """From a level and an optional JSON file ``{"group name": ["feature", ...], ...}``."""
        groups: dict[str, tuple[str, ...]] = {}
        if groups_file is not None:
            try:
                raw = json.loads(Path(groups_file).read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"--groups {groups_file}: {e}") from None
            if not isinstance(raw, dict) or not all(
                isinstance(v, list) and all(isinstance(f, str) for f in v) for v in raw.values()
            ):
                raise ValueError(f'--groups {groups_file}: expected {{"group name": ["feature", ...], ...}}')
            groups = {str(k): tuple(v) for k, v in raw.items()}
        return cls(level, groups, label)

    def units(self, feature_names: tuple[str, ...] | list[str]) -> Units:
        """This party's reason units over its ``feature_names`` (raises ValueError on a bad grouping)."""
        names = tuple(feature_names)
        d = len(names)
        if self.level == "feature":
            return Units(names, np.eye(d))
        if self.level == "none":
            return Units((self.label,), np.ones((d, 1)))
        index = {f: j for j, f in enumerate(names)}
        seen: dict[str, str] = {}
        columns, unit_names = [], []
        for group, members in self.groups.items():
            unknown = [f for f in members if f not in index]
            if unknown:
                raise ValueError(f"group {group!r} names features this party does not have: {unknown}")
            twice = [f for f in members if f in seen]
            if twice:
                raise ValueError(f"group {group!r}: {twice} already in group {seen[twice[0]]!r}")
            seen.update(dict.fromkeys(members, group))
            col = np.zeros(d)
            col[[index[f] for f in members]] = 1.0
            columns.append(col)
            unit_names.append(group)
        rest = [j for j, f in enumerate(names) if f not in seen]
        if rest:
            col = np.zeros(d)
            col[rest] = 1.0
            columns.append(col)
            unit_names.append(f"{self.label}: other")
        return Units(tuple(unit_names), np.stack(columns, axis=1) if columns else np.zeros((d, 0)))

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "groups": {k: list(v) for k, v in self.groups.items()},
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Release:
        return cls(
            d["level"], {k: tuple(v) for k, v in d.get("groups", {}).items()}, d.get("label", "partner data")
        )


#: the bank's own features are always reasons by name: it sees them anyway
BANK_RELEASE = Release("feature")


@dataclass(frozen=True)
class Units:
    """A party's reason units: their names, and which of its features each sums (``(d, G)`` 0/1)."""

    names: tuple[str, ...]
    membership: np.ndarray

    @property
    def count(self) -> int:
        return len(self.names)


def lr_contributions(
    X: np.ndarray, w: np.ndarray, reference: np.ndarray, membership: np.ndarray
) -> np.ndarray:
    """``(n, G)``: per row and unit, ``sum_{j in unit} w_j (x_j - ref_j)`` (one party's own columns;
    ``membership``: :attr:`Units.membership`)."""
    D = np.asarray(X, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    return (D * np.asarray(w, dtype=np.float64)) @ membership


def joint_membership(memberships: list[np.ndarray]) -> np.ndarray:
    """The parties' ``(d_p, G_p)`` groupings as one block-diagonal ``(sum d_p, sum G_p)`` over the joint features."""
    d, g = sum(m.shape[0] for m in memberships), sum(m.shape[1] for m in memberships)
    out = np.zeros((d, g))
    r = c = 0
    for m in memberships:
        out[r : r + m.shape[0], c : c + m.shape[1]] = m
        r, c = r + m.shape[0], c + m.shape[1]
    return out


def tree_contributions(trees: list[Tree], bins: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """``(n, G)``: per row and unit, the value changes along the row's paths at splits on the unit's
    features, summed over the trees (``bins``: the joint binned features; ``membership``: ``(d, G)``)."""
    n = len(bins)
    rows = np.arange(n)
    out = np.zeros((n, membership.shape[1]))
    for tree in trees:
        values = tree.path_values()
        node = np.zeros(n, dtype=np.int64)
        for _ in range(tree.depth):
            f = tree.feature[node]
            split = f != NO_SPLIT
            f = np.maximum(f, 0)
            child = 2 * node + 1 + (split & (bins[rows, f] > tree.bin[node]))
            change = np.where(split, values[child] - values[node], 0.0)
            out += change[:, None] * membership[f]
            node = child
    return out


def toward(contributions: np.ndarray, adverse: str) -> np.ndarray:
    """Contributions to the margin (log-odds of y = 1) turned toward the adverse outcome."""
    if adverse not in ADVERSE:
        raise ValueError(f"adverse outcome {adverse!r}: choose y1 or y0")
    return contributions if adverse == "y1" else -contributions


def top_reasons(contributions: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``r`` largest contributions per row, in decreasing order (ties: the unit listed first).

    ``contributions``: ``(n, m)``, already turned toward the adverse outcome. Returns the units'
    indices ``(n, r)`` and their contributions ``(n, r)``.
    """
    C = np.asarray(contributions, dtype=np.float64)
    r = min(r, C.shape[1])
    order = np.argsort(-C, axis=1, kind="stable")[:, :r]
    return order, np.take_along_axis(C, order, axis=1)


@dataclass(frozen=True)
class Reasons:
    """An application's reasons as the bank receives them: unit names (every party's, in rank
    order), and per row the chosen units' indices and contributions, strongest first."""

    names: tuple[str, ...]
    units: np.ndarray  # (n, r) int
    values: np.ndarray  # (n, r) toward the adverse outcome, in logit units

    def of(self, row: int) -> list[tuple[str, float]]:
        return [(self.names[u], float(v)) for u, v in zip(self.units[row], self.values[row], strict=True)]


def agreement(a: Reasons, b: Reasons, tol: float = 1e-3) -> float:
    """Share of rows whose top-R sets agree, sets that differ only by units tied within ``tol`` in ``b``.

    Why the tolerance: fixed-point shares and the plaintext model differ by rounding, so two
    units whose contributions are within ``tol`` may swap places without either being wrong.
    """
    if a.units.shape != b.units.shape:
        raise ValueError(f"reason tables differ in shape: {a.units.shape} vs {b.units.shape}")
    ok = 0
    for i in range(len(a.units)):
        sa, sb = set(a.units[i].tolist()), set(b.units[i].tolist())
        if sa == sb:
            ok += 1
            continue
        # a differing unit is acceptable if it sits at the boundary: within tol of b's weakest reason
        weakest = b.values[i].min()
        extra = sa - sb
        va = dict(zip(a.units[i].tolist(), a.values[i].tolist(), strict=True))
        ok += all(abs(va[u] - weakest) <= tol for u in extra)
    return ok / max(len(a.units), 1)
