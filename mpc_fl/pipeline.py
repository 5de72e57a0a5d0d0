"""What one party does in a run: load its own file, align, split, scale, train, score, report.

This is the party program behind ``mpc-fl party``. It reads only this party's file
and talks to the others only through the session's channel (and CrypTen), so the
same code runs a party on one machine or on its own host.

Alignment (``psi``, the default): ECDH-PSI between the bank and each provider;
every party learns the common ids and nothing else about the others' lists; rows
are then ordered by id, which reproduces the reference split. ``sorted`` skips PSI
for pre-aligned benchmark files: each party sorts by id and the parties only
compare a hash of their id lists (the run fails if they differ).

Split: the bank draws an 80/20 split of the aligned rows and tells the providers
which rows are test rows. The default (``random``) picks the test rows by a keyed hash of
the ids under a key only the bank holds, so the mask says nothing about the labels;
``stratified-public`` (sklearn, public seed 42) reproduces the reference numbers but
lets a provider read labels off the mask (security review F2): public data only.

Scaling: each party scales its own features with statistics of its own training rows,
the way the protocol asks (robust for the linear models, standard for trees; see
:data:`mpc_fl.data.vertical.SCALINGS`).
"""

from __future__ import annotations

import hashlib
import resource
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpc_fl import metrics
from mpc_fl.data.errors import DataError
from mpc_fl.data.party_table import PartyTable
from mpc_fl.data.split import SPLITS, draw_split
from mpc_fl.data.vertical import SCALINGS, scaler_from_state, scaler_state
from mpc_fl.models.store import ModelPart, ModelPartError, fingerprint, load_part, save_part
from mpc_fl.protocols import make_protocol
from mpc_fl.protocols.base import BANK, Context, LocalData, VerticalProtocol
from mpc_fl.runtime.ledger import Ledger

#: "psi" is RR22, the fastest PSI here; "ecdh" and "kkrt" reveal the same (see mpc_fl.psi).
ALIGNMENTS = ("psi", "ecdh", "kkrt", "sorted")


def _intersect(ch, ids: np.ndarray, peer: str, method: str, progress: bool) -> np.ndarray:
    """Positions of this party's rows common with ``peer``, in the order both parties agree on."""
    if method == "ecdh":
        from mpc_fl.psi.ecdh import run_psi

        return run_psi(ch, ids, peer, progress=progress).indices
    from mpc_fl.psi.ot import run_ot_psi

    return run_ot_psi(ch, ids, peer, protocol="kkrt" if method == "kkrt" else "rr22").indices


def _id_sort_key(ids: np.ndarray) -> np.ndarray:
    """Order ids numerically when they are numbers, else as strings; identical at every party."""
    text = np.array([str(i) for i in ids])
    try:
        return np.argsort(text.astype(np.int64), kind="stable")
    except ValueError:
        return np.argsort(text, kind="stable")


def align(ctx: Context, table: PartyTable, method: str = "psi", *, progress: bool = False) -> PartyTable:
    """This party's rows of the customers common to all parties, in id order."""
    if method not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {method!r}; choose from {ALIGNMENTS}")
    ch = ctx.channel
    with ch.phase("alignment"):
        if method == "sorted":
            mine = table.take(_id_sort_key(table.ids))
            digest = hashlib.sha256("\n".join(map(str, mine.ids)).encode()).hexdigest()
            peers = [r for r in ctx.roles if r != ctx.role]
            for r in peers:
                ch.send_json(r, digest)
            differ = [r for r in peers if ch.recv_json(r) != digest]
            if differ:
                raise DataError(
                    f"{ctx.role}: alignment 'sorted' needs identical id lists, but {', '.join(differ)} has "
                    f"another list (this party has {mine.n_rows:,} ids); use --align psi"
                )
            return mine
        if ctx.role != BANK:
            common = _intersect(ch, table.ids, BANK, method, progress)
            keep = ch.recv_arrays(BANK)["keep"]  # positions of the all-party intersection
            rows = common[keep]
        else:
            rows = np.arange(table.n_rows)
            providers = [r for r in ctx.roles if r != BANK]
            pairwise = {r: _intersect(ch, table.ids, r, method, progress) for r in providers}
            common = set(range(table.n_rows))
            for idx in pairwise.values():
                common &= set(idx.tolist())
            for r, idx in pairwise.items():
                ch.send_arrays(r, keep=np.flatnonzero(np.isin(idx, list(common))))
            rows = np.array(sorted(common), dtype=np.int64)
        if len(rows) == 0:
            raise DataError(f"{ctx.role}: the parties have no customers in common")
        sub = table.take(rows)
        return sub.take(_id_sort_key(sub.ids))


def split_rows(
    ctx: Context, table: PartyTable, method: str = "random", key: bytes | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The bank draws the split by ``method`` (``key``: its secret split key); providers get the test-row mask."""
    if method not in SPLITS:  # checked at every party, so nobody waits on a bank that gave up
        raise ValueError(f"unknown split {method!r}; choose from {SPLITS}")
    with ctx.channel.phase("setup"):
        if ctx.role == BANK:
            _, test = draw_split(method, table.ids, table.y, key=key)
            is_test = np.zeros(table.n_rows, dtype=bool)
            is_test[test] = True
            for r in ctx.roles:
                if r != BANK:
                    ctx.channel.send_arrays(r, is_test=np.packbits(is_test))
        else:
            packed = ctx.channel.recv_arrays(BANK)["is_test"]
            is_test = np.unpackbits(packed, count=table.n_rows).astype(bool)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


@dataclass
class PartyReport:
    role: str
    protocol: str
    params: dict
    n_input: int
    n_aligned: int
    n_train: int
    n_test: int
    fit_s: float
    score_s: float
    peak_rss_mb: float
    ledger: dict
    metrics: dict[str, float] = field(default_factory=dict)
    scores: list[float] | None = None
    test_ids: list[str] | None = None
    test_labels: list[int] | None = None
    split: str = "random"
    alignment: str = "psi"
    #: protocol-specific facts of the run (e.g. SS-GBDT's reconstructable nodes per party)
    run_info: dict = field(default_factory=dict)
    #: seconds from this party's process start to its report (set by the CLI)
    wall_s: float | None = None
    #: seconds from this party's process start to being ready to connect (set by the CLI)
    ready_s: float | None = None
    #: where this party saved its part of the model, if it did
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def run_party(
    ctx: Context,
    table: PartyTable,
    protocol: str,
    options: dict[str, Any] | None = None,
    *,
    alignment: str = "psi",
    split: str = "random",
    split_key: bytes | None = None,
    keep_scores: bool = False,
    progress: bool = False,
    save_model: Path | None = None,
) -> PartyReport:
    """Align, split, scale, fit and score as one party; the bank also computes the test metrics.

    ``save_model``: write this party's part of the trained model there (:mod:`mpc_fl.models.store`).
    """
    proto = make_protocol(protocol, **(options or {}))
    ctx.progress.note(f"aligning {table.n_rows:,} customers ({alignment})")
    aligned = align(ctx, table, alignment, progress=progress)
    ctx.progress.note(f"{aligned.n_rows:,} customers in common; splitting ({split})")
    train, test = split_rows(ctx, aligned, split, split_key)
    scaler = SCALINGS[proto.scaling].fit(aligned.X[train])  # this party's own training rows only
    X = scaler.transform(aligned.X)
    y = aligned.y
    t0 = time.perf_counter()
    proto.fit(ctx, LocalData(X[train], None if y is None else y[train], aligned.feature_names))
    t1 = time.perf_counter()
    ctx.progress.note(f"scoring {len(test):,} test rows")
    scores = proto.predict_proba(ctx, LocalData(X[test], None, aligned.feature_names))
    t2 = time.perf_counter()
    ledger: Ledger = ctx.channel.ledger
    report = PartyReport(
        role=ctx.role,
        protocol=protocol,
        params=proto.params_dict(),
        n_input=table.n_rows,
        n_aligned=aligned.n_rows,
        n_train=len(train),
        n_test=len(test),
        fit_s=t1 - t0,
        score_s=t2 - t1,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
        ledger=ledger.to_dict(),
        split=split,
        alignment=alignment,
        run_info=proto.run_info(),
    )
    if scores is not None:
        report.metrics = metrics.summary(y[test], scores)
        if keep_scores:
            report.scores = [float(s) for s in scores]
            report.test_ids = [str(i) for i in aligned.ids[test]]
            report.test_labels = [int(v) for v in y[test]]
    if save_model is not None:
        report.model = str(save_model_part(ctx, proto, scaler, aligned, save_model))
    return report


def save_model_part(
    ctx: Context, proto: VerticalProtocol, scaler: Any, table: PartyTable, path: Path
) -> Path:
    """Agree on a model fingerprint with every party, then write this party's own part."""
    with ctx.channel.phase("setup"):
        if ctx.role == BANK:
            model_id = secrets.token_hex(16)  # makes the fingerprint unique to this training run
            for r in ctx.roles:
                if r != BANK:
                    ctx.channel.send_json(r, model_id)
        else:
            model_id = ctx.channel.recv_json(BANK)
    params = proto.params_dict()
    meta, arrays = proto.export_state()
    s_meta, s_arrays = scaler_state(scaler)
    part = ModelPart(
        role=ctx.role,
        protocol=proto.name,
        protocol_version=proto.model_version,
        params=params,
        parties=list(ctx.roles),
        fingerprint=fingerprint(model_id, proto.name, params, list(ctx.roles)),
        feature_names=list(table.feature_names),
        meta={"protocol": meta, "scaler": s_meta, "trained_rows": int(table.n_rows)},
        arrays={**{f"protocol.{k}": v for k, v in arrays.items()}, **s_arrays},
    )
    return save_part(part, path)


@dataclass
class LoadedModel:
    """A party's part of a saved model, restored: the protocol (ready to score) and the scaler."""

    part: ModelPart
    protocol: VerticalProtocol
    scaler: Any


def load_model(path: Path, role: str) -> LoadedModel:
    """Read this party's part and rebuild the protocol from it; refuse parts of another version."""
    part = load_part(path, role=role)
    proto = make_protocol(part.protocol, **part.params)
    if part.protocol_version != proto.model_version:
        raise ModelPartError(
            f"{path} was saved with {part.protocol} model version {part.protocol_version}; this mpc_fl "
            f"reads version {proto.model_version}: retrain the model"
        )
    arrays = {k.removeprefix("protocol."): v for k, v in part.arrays.items() if k.startswith("protocol.")}
    proto.import_state(part.meta["protocol"], arrays)
    return LoadedModel(part, proto, scaler_from_state(part.meta["scaler"], part.arrays))


@dataclass
class ScoreReport:
    role: str
    protocol: str
    model: str
    n_input: int
    n_aligned: int
    score_s: float
    ledger: dict
    ids: list[str] | None = None
    scores: list[float] | None = None
    #: when the bank's file to score carries labels: the metrics of these scores
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def score_party(
    ctx: Context, table: PartyTable, model: LoadedModel, *, alignment: str = "psi"
) -> ScoreReport:
    """Score a new file with a saved model: align the new ids privately, then score; only the bank gets scores."""
    if list(table.feature_names) != model.part.feature_names:
        raise DataError(
            f"{table.source}: columns {list(table.feature_names)} differ from the ones the model was trained on "
            f"({model.part.feature_names})"
        )
    ctx.progress.note(f"aligning {table.n_rows:,} customers to score ({alignment})")
    aligned = align(ctx, table, alignment)
    t0 = time.perf_counter()
    ctx.progress.note(f"scoring {aligned.n_rows:,} customers")
    scores = model.protocol.predict_proba(
        ctx, LocalData(model.scaler.transform(aligned.X), None, aligned.feature_names)
    )
    report = ScoreReport(
        role=ctx.role,
        protocol=model.part.protocol,
        model=model.part.fingerprint,
        n_input=table.n_rows,
        n_aligned=aligned.n_rows,
        score_s=time.perf_counter() - t0,
        ledger=ctx.channel.ledger.to_dict(),
    )
    if scores is not None:
        report.ids = [str(i) for i in aligned.ids]
        report.scores = [float(s) for s in scores]
        if aligned.y is not None and len(np.unique(aligned.y)) == 2:
            report.metrics = metrics.summary(aligned.y, scores)
    return report
