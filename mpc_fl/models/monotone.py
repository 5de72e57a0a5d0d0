"""Monotone constraints: each party declares them for its own features, and nobody else is told.

A constraint ``name:+1`` says the score (the model's probability of label 1) never falls as the
feature grows, ``name:-1`` that it never rises (for a default label: more late payments never
lower the risk, a higher income never raises it). ``--param monotone=...`` is party-local: it is
left out of the handshake and of the saved model's fingerprint, and each protocol says in its
``leakage`` what the other parties learn of it (the secret-shared ones: only that some party has
constraints). Every scaling the protocols apply is non-decreasing per column, so a sign holds for
the raw and the scaled feature alike.

How each model family enforces it: trees the way XGBoost does (:func:`mpc_fl.models.gbdt.split_gains`
rejects a split whose children's weights go the wrong way, :func:`mpc_fl.models.gbdt.constrain_tree`
bounds every subtree's weights by its parent's midpoint); logistic regression by projecting each
constrained weight onto its sign after every step. :func:`grid_violations` is the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

OPTION = "monotone"
#: how a sign may be written after "name:"
SIGNS = {"+1": 1, "1": 1, "+": 1, "increasing": 1, "-1": -1, "-": -1, "decreasing": -1, "0": 0}


def parse(spec: str) -> dict[str, int]:
    """``"a:+1,b:-1"`` -> ``{"a": 1, "b": -1}``; one-line ValueError on a malformed entry or a repeat."""
    out: dict[str, int] = {}
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        name, sep, sign = entry.rpartition(":")
        name, sign = name.strip(), sign.strip().lower()
        if not sep or not name or sign not in SIGNS:
            raise ValueError(
                f"monotone: {entry!r} is not feature:+1 or feature:-1 (comma-separated, e.g. orders_90d:+1)"
            )
        if name in out:
            raise ValueError(f"monotone: {name!r} is constrained twice")
        out[name] = SIGNS[sign]
    return out


def signs(spec: str, names: Sequence[str]) -> np.ndarray:
    """Per feature of this party (``names``, in its column order): +1, -1 or 0 (unconstrained).

    Raises ValueError naming a constrained feature this party does not have: a party declares
    constraints for its own features only.
    """
    wanted = parse(spec)
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ValueError(
            f"monotone: {', '.join(map(repr, unknown))} not among this party's features "
            f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}); each party constrains its own"
        )
    return np.array([wanted.get(n, 0) for n in names], dtype=np.int64)


def own_signs(spec: str, data) -> np.ndarray:  # noqa: ANN001 - a mpc_fl.protocols.base.LocalData
    """:func:`signs` of a protocol's own rows (``data.feature_names``; all 0 if ``spec`` is empty)."""
    if not spec:
        return np.zeros(data.X.shape[1], dtype=np.int64)
    if len(data.feature_names) != data.X.shape[1]:
        raise ValueError("monotone: constraints name features, and these rows came without their names")
    return signs(spec, data.feature_names)


def reported(names: Sequence[str], signs: np.ndarray) -> dict:
    """A protocol's ``run_info`` entry for this party's own constraints: ``{"monotone": {name: sign}}``,
    or ``{}`` when it has none."""
    own = {n: int(c) for n, c in zip(names, signs, strict=False) if c}
    return {"monotone": own} if own else {}


def split_among(spec: str, names_by_party: dict[str, Sequence[str]]) -> dict[str, str]:
    """Each party's part of ``spec`` (a local run, where one command names every party's features).

    A feature may be named ``role.feature`` (e.g. ``provider.x5:+1``), which it must be when more
    than one party has a feature of that name. Raises ValueError naming a feature no party has,
    or one that is ambiguous.
    """
    out: dict[str, dict[str, int]] = {party: {} for party in names_by_party}
    for name, sign in parse(spec).items():
        role, _, rest = name.partition(".")
        if role in names_by_party and rest in set(names_by_party[role]):
            out[role][rest] = sign
            continue
        owners = [party for party, names in names_by_party.items() if name in set(names)]
        if not owners:
            raise ValueError(f"monotone: {name!r} is no party's feature")
        if len(owners) > 1:
            raise ValueError(
                f"monotone: {', '.join(owners)} all have a feature {name!r}: name it as "
                f"{' or '.join(f'{o}.{name}' for o in owners)}"
            )
        out[owners[0]][name] = sign
    return {party: ",".join(f"{k}:{v:+d}" for k, v in own.items()) for party, own in out.items()}


def grid_violations(
    score: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    feature: int,
    sign: int,
    grid: np.ndarray,
    tolerance: float = 0.0,
) -> int:
    """How many (row, grid step) pairs move the score the wrong way when only ``feature`` changes.

    Each row of ``X`` is scored with ``X[:, feature]`` set to every value of the increasing
    ``grid``; a step counts when the score falls (``sign`` +1) or rises (-1) by more than
    ``tolerance``. ``score`` maps a matrix to one score per row.
    """
    if sign == 0:
        return 0
    rows = np.repeat(X, len(grid), axis=0)
    rows[:, feature] = np.tile(np.asarray(grid, dtype=float), len(X))
    s = np.asarray(score(rows), dtype=float).reshape(len(X), len(grid))
    steps = sign * np.diff(s, axis=1)
    return int((steps < -tolerance).sum())
