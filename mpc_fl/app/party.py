"""What one party does in a run: load its own file, align, split, scale, train, score, report.

This is the party program behind ``mpc-fl party`` and ``mpc-fl score-party``: :func:`train` and
:func:`score` take a validated job (:mod:`mpc_fl.app.jobs`), check this party's own files, join the
federation and run. It reads only this party's files and talks to the others only through the
session's channel (and CrypTen), so the same code runs a party on one machine or on its own host.

Alignment (:mod:`mpc_fl.psi.align`): RR22 PSI by default; every party learns the common ids and
nothing else about the others' lists; rows are then ordered by id.

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

import contextlib
import json
import resource
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpc_fl import metrics
from mpc_fl.app.jobs import Links, PartyReport, ScoreJob, ScoreReport, TrainJob
from mpc_fl.app.store import ModelPart, ModelPartError, fingerprint, load_part, save_part
from mpc_fl.data.errors import DataError
from mpc_fl.data.party_table import PartyTable
from mpc_fl.data.split import SPLITS, draw_split
from mpc_fl.data.vertical import SCALINGS, scaler_from_state, scaler_state
from mpc_fl.models.reasons import BANK_RELEASE, Reasons, Release
from mpc_fl.protocols import (
    build_protocol,
    check_reasons,
    full_options,
    make_protocol,
    needs_dealer,
    uses_crypten,
)
from mpc_fl.protocols.base import BANK, Context, LocalData, VerticalProtocol
from mpc_fl.psi.align import align
from mpc_fl.runtime.ledger import Ledger


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
    features: str = "all",
    release: Release | None = None,
    importance: bool = False,
) -> PartyReport:
    """Align, split, scale, fit and score as one party; the bank also computes the test metrics.

    ``save_model``: write this party's part of the trained model there (:mod:`mpc_fl.app.store`).
    ``features="providers"``: a prospect model; the bank trains with its labels and none of its
    features, so the model scores SMEs that only the providers know. ``release``: what this
    party's part releases as reason codes (default: the bank its features, a provider nothing).
    """
    proto = build_protocol(protocol, options or {})  # checked once, where the job was built
    ctx.progress.note(f"aligning {table.n_rows:,} customers ({alignment})")
    aligned = align(ctx, table, alignment, progress=progress)
    if features == "providers" and ctx.role == BANK:
        aligned = labels_only(aligned)
    ctx.progress.note(f"{aligned.n_rows:,} customers in common; splitting ({split})")
    train, test = split_rows(ctx, aligned, split, split_key)
    scaler = SCALINGS[proto.scaling].fit(aligned.X[train])  # this party's own training rows only
    X = scaler.transform(aligned.X)
    y = aligned.y
    t0 = time.perf_counter()
    proto.fit(ctx, LocalData(X[train], None if y is None else y[train], aligned.feature_names))
    t1 = time.perf_counter()
    if importance:  # each party its own; a provider's, at its release level, to the bank
        from mpc_fl.app.importance import exchange

        release = release or (BANK_RELEASE if ctx.role == BANK else Release())
        with ctx.channel.phase("importance"):
            found = exchange(ctx, proto, aligned.feature_names, release)
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
        importance=found if importance else {},
    )
    if scores is not None:
        report.metrics = metrics.summary(y[test], scores)
        if keep_scores:
            report.scores = [float(s) for s in scores]
            report.test_ids = [str(i) for i in aligned.ids[test]]
            report.test_labels = [int(v) for v in y[test]]
    if save_model is not None:
        report.model = str(
            save_model_part(
                ctx,
                proto,
                scaler,
                aligned,
                save_model,
                features=features,
                train_X=aligned.X[train],
                scores=scores,
                release=release,
            )
        )
    return report


def labels_only(table: PartyTable) -> PartyTable:
    """The bank's aligned rows with their labels and no features (a prospect model's training input)."""
    return PartyTable(table.role, table.ids, table.X[:, :0], (), table.y, table.source)


def save_model_part(
    ctx: Context,
    proto: VerticalProtocol,
    scaler: Any,
    table: PartyTable,
    path: Path,
    *,
    features: str = "all",
    train_X: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    release: Release | None = None,
) -> Path:
    """Agree on a model fingerprint with every party, then write this party's own part.

    The part keeps a stability reference of this party's training rows ``train_X`` (deciles of
    its own features, :mod:`mpc_fl.models.stability`) and, at the bank, of its held-out
    ``scores``. A provider's part of a prospect model also keeps the ids it was trained on (its
    own customers, common with the bank: the alignment told it so), to refuse them as prospects.
    For reason codes it keeps its ``release`` and its reference applicant (the mean of its own
    scaled training rows).
    """
    from mpc_fl.models.reasons import BANK_RELEASE
    from mpc_fl.models.stability import Reference

    release = release or (BANK_RELEASE if ctx.role == BANK else Release())
    release.units(table.feature_names)  # a grouping that names another party's features fails here
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
    known = {"known_ids": np.asarray(table.ids)} if features == "providers" and ctx.role != BANK else {}
    if train_X is not None:
        known.update(Reference.of(train_X).to_arrays("stability.features"))
        known["reasons.reference"] = np.asarray(scaler.transform(train_X), dtype=np.float64).mean(axis=0)
    if scores is not None:
        known.update(Reference.of(np.asarray(scores)).to_arrays("stability.score"))
    part = ModelPart(
        role=ctx.role,
        protocol=proto.name,
        protocol_version=proto.model_version,
        params=params,
        parties=list(ctx.roles),
        fingerprint=fingerprint(model_id, proto.name, params, list(ctx.roles)),
        feature_names=list(table.feature_names),
        meta={
            "protocol": meta,
            "scaler": s_meta,
            "trained_rows": int(table.n_rows),
            "features": features,
            "reasons": release.to_dict(),
        },  # fmt: skip
        arrays={**{f"protocol.{k}": v for k, v in arrays.items()}, **s_arrays, **known},
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


def score_party(
    ctx: Context,
    table: PartyTable,
    model: LoadedModel,
    *,
    alignment: str = "psi",
    reasons: int = 0,
    adverse: str = "y1",
) -> ScoreReport:
    """Score a new file with a saved model: align the new ids privately, then score; only the bank gets
    scores (and, with ``reasons``, the top reasons of each row, :func:`explain`)."""
    check_columns(table, model)
    ctx.progress.note(f"aligning {table.n_rows:,} customers to score ({alignment})")
    aligned = align(ctx, table, alignment)
    t0 = time.perf_counter()
    ctx.progress.note(f"scoring {aligned.n_rows:,} customers")
    data = LocalData(model.scaler.transform(aligned.X), None, aligned.feature_names)
    scores = model.protocol.predict_proba(ctx, data)
    explained = explain(ctx, model, data, reasons, adverse) if reasons else None
    report = ScoreReport(
        role=ctx.role,
        protocol=model.part.protocol,
        model=model.part.fingerprint,
        n_input=table.n_rows,
        n_aligned=aligned.n_rows,
        score_s=time.perf_counter() - t0,
        ledger=ctx.channel.ledger.to_dict(),
    )
    report.stability = stability(model, aligned.X, scores)
    if scores is not None:
        report.ids = [str(i) for i in aligned.ids]
        report.scores = [float(s) for s in scores]
        if explained is not None:
            report.reasons = [explained.of(i) for i in range(aligned.n_rows)]
        if aligned.y is not None and len(np.unique(aligned.y)) == 2:
            report.metrics = metrics.summary(aligned.y, scores)
    return report


def explain(
    ctx: Context,
    model: LoadedModel,
    data: LocalData,
    r: int,
    adverse: str,
    *,
    rows: np.ndarray | None = None,
    n_rows: int | None = None,
) -> Reasons | None:
    """The top ``r`` reasons toward ``adverse`` of each row (or only of ``rows``), at the bank; ``None`` elsewhere.

    Each party's units come from its own part (what it chose to release, its reference
    applicant); the providers send only their units' names. A protocol on shares ranks them
    without opening the rest (:func:`mpc_fl.crypto.reasons.top_reasons`); a plaintext one at the bank.
    ``rows`` (the bank's secret, e.g. the real applicants among decoys; the providers pass their
    count ``n_rows``): only these rows are ranked, picked from the shares by a one-hot the bank
    inputs, so nobody else learns which they are.
    """
    from mpc_fl.models import reasons as plain

    part = model.part
    if "reasons" not in part.meta or "reasons.reference" not in part.arrays:
        raise ModelPartError(f"{part.role}'s model part was saved before reason codes were kept: retrain it")
    units = Release.from_dict(part.meta["reasons"]).units(part.feature_names)
    with ctx.channel.phase("reasons"):
        if ctx.role == BANK:
            names = [*units.names]
            for role in ctx.roles:
                if role != BANK:
                    names += ctx.channel.recv_json(role)
        else:
            ctx.channel.send_json(BANK, list(units.names))
        c = model.protocol.reason_contributions(ctx, data, units.membership, part.arrays["reasons.reference"])
        if c is None:
            return None
        if isinstance(c, np.ndarray):
            chosen = plain.top_reasons(plain.toward(c if rows is None else c[rows], adverse), r)
        else:
            from mpc_fl.crypto.reasons import select_rows, top_reasons

            if rows is not None or n_rows is not None:
                c = select_rows(c, rows, n_rows)
            chosen = top_reasons(plain.toward(c, adverse), r, dst=0)
    return None if chosen is None else Reasons(tuple(names), *chosen)


def check_columns(table: PartyTable, model: LoadedModel) -> None:
    """A file to score must hold the columns this party's part was trained on, in that order."""
    if list(table.feature_names) != model.part.feature_names:
        raise DataError(
            f"{table.source}: columns {list(table.feature_names)} differ from the ones the model was trained on "
            f"({model.part.feature_names})"
        )


def stability(model: LoadedModel, X: np.ndarray, scores: np.ndarray | None) -> dict[str, float]:
    """This party's own features' (and at the bank the score's) stability index against training.

    Local: each party compares its own scored rows with the reference its part keeps; {} for a
    part saved before references were kept.
    """
    from mpc_fl.models.stability import Reference

    out: dict[str, float] = {}
    ref = Reference.from_arrays(model.part.arrays, "stability.features")
    if ref is not None and len(X):
        out.update(zip(model.part.feature_names, (float(v) for v in ref.psi(X)), strict=True))
    ref = Reference.from_arrays(model.part.arrays, "stability.score")
    if ref is not None and scores is not None and len(scores):
        out["score"] = float(ref.psi(np.asarray(scores))[0])
    return out


# ---------------------------------------------------------------------- the party program


def federation_of(links: Links):  # noqa: ANN201 - a Federation
    from mpc_fl.runtime.federation import load_federation

    return load_federation(
        Path(links.federation),
        connect_timeout_s=links.connect_timeout_s,
        insecure_cleartext=links.insecure_cleartext,
        emulated_rtt_ms=links.emulate_rtt_ms,
        emulated_mbit=links.emulate_mbit,
    )


def listen_address(links: Links) -> tuple[str, int] | None:
    from mpc_fl.runtime.federation import parse_address

    return parse_address(links.listen) if links.listen else None


#: How long a party whose input is bad waits for the other members to be ready to hear why.
TELL_PEERS_S = 10.0


@contextlib.contextmanager
def peers_told_on_failure(job: TrainJob | ScoreJob, say: Callable[[BaseException], None]) -> Iterator[None]:
    """A party whose own input is bad still joins long enough to tell every member why it stops.

    Without this, the others waited out their connect timeout and then named the wrong member.
    ``say`` gives the user the line first (telling the others takes at most :data:`TELL_PEERS_S`);
    the federation file is read only to tell the others (if it is bad too, nobody can be told,
    and the first error stands).
    """
    try:
        yield
    except Exception as err:
        from mpc_fl.runtime.session import one_line, tell_peers_of_failure

        say(err)
        try:
            fed = federation_of(job.links)
        except Exception:  # noqa: BLE001 - nobody can be told; the input's error is what the user sees
            raise err from None
        if job.role in fed.roles:
            reason = f"{job.role}: {one_line(err)}"
            tell_peers_of_failure(
                fed, job.role, Path(job.links.key), reason, dealer=job.dealer, within_s=TELL_PEERS_S
            )
        raise


def member_federation(job: TrainJob | ScoreJob):  # noqa: ANN202 - a Federation
    fed = federation_of(job.links)
    if job.role not in fed.roles:
        raise ValueError(f"--role {job.role!r} is not a computing party of the federation {fed.roles}")
    return fed


def write_report(path: str | None, report: PartyReport | ScoreReport) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report.to_dict(), indent=1, default=str))


def train(job: TrainJob, say: Callable[[BaseException], None]) -> PartyReport:
    """Run one party's training job: its own files first, then the federation; write its report."""
    from mpc_fl.data.party_table import load_party_csv
    from mpc_fl.models.monotone import signs as monotone_signs

    with peers_told_on_failure(job, say):
        # this party's own files are checked before anything slow is imported or any peer is contacted
        table = load_party_csv(job.data, role="bank" if job.role == BANK else "provider", id_col=job.id_col)
        release = job.reason_release()
        try:
            release.units(table.feature_names)  # a grouping of features this file lacks
        except ValueError as err:
            raise DataError(f"--groups: {err}") from None
        try:
            monotone_signs(
                job.options.get("monotone", ""), table.feature_names
            )  # constraints on its own features
        except ValueError as err:
            raise DataError(str(err)) from None
        split_key = None
        if job.split_key:
            from mpc_fl.data.split import load_split_key

            split_key = load_split_key(Path(job.split_key))
    fed = member_federation(job)
    crypten = uses_crypten(job.protocol)
    hello = {
        "protocol": job.protocol,
        "params": full_options(job.protocol, job.options),
        "alignment": job.align,
        "split": job.split,
        "features": job.features,
        "importance": job.importance,
    }
    from mpc_fl.runtime.session import connect, process_age_s

    with connect(
        fed, job.role, Path(job.links.key), uses_crypten=crypten, listen=listen_address(job.links), hello=hello,
        quiet=job.links.quiet, dealer=crypten and not job.insecure_tfp,
    ) as session:  # fmt: skip
        report = run_party(
            session, table, job.protocol, job.options,
            alignment=job.align, split=job.split, split_key=split_key, keep_scores=job.keep_scores,
            save_model=Path(job.save_model) if job.save_model else None, features=job.features,
            release=release, importance=job.importance,
        )  # fmt: skip
        report.ready_s = session.ready_s
    report.wall_s = process_age_s()
    write_report(job.out, report)
    return report


def score(job: ScoreJob, say: Callable[[BaseException], None]) -> ScoreReport:
    """Run one party's scoring job with its saved part; the bank writes ``id,score`` if asked."""
    from mpc_fl.data.party_table import load_party_csv

    with peers_told_on_failure(job, say):
        kind = "bank-scoring" if job.role == BANK else "provider"  # labels are optional in a file to score
        table = load_party_csv(job.data, role=kind, id_col=job.id_col, label_col=job.label_col)
        model = load_model(Path(job.model), job.role)  # refuses another role's part or another version
        check_reasons(model.part.protocol, job.reasons)
    fed = member_federation(job)
    from mpc_fl.runtime.session import connect, process_age_s

    hello = {
        "mode": "score",
        "protocol": model.part.protocol,
        "model": model.part.fingerprint,
        "alignment": job.align,
        "reasons": [job.reasons, job.adverse],
    }
    crypten = needs_dealer(model.part.protocol, job.reasons)
    with connect(
        fed, job.role, Path(job.links.key), uses_crypten=crypten, listen=listen_address(job.links), hello=hello,
        quiet=job.links.quiet,
    ) as session:  # fmt: skip
        report = score_party(
            session, table, model, alignment=job.align, reasons=job.reasons, adverse=job.adverse
        )
    report.wall_s = process_age_s()
    write_report(job.out, report)
    if report.scores is not None and job.scores:
        card = None
        if job.scorecard is not None:
            from mpc_fl.models.scorecard import Scorecard

            card = Scorecard.parse(job.scorecard)
        columns = {"score": [f"{v:.6f}" for v in report.scores]}
        if card is not None:
            columns["points"] = [f"{v:.1f}" for v in card.points_of_probability(np.asarray(report.scores))]
        columns.update(reason_columns(report.reasons, None if card is None else card.factor))
        write_ids(Path(job.scores), report.ids or [], columns)
    return report


def reason_columns(
    reasons: list[list[tuple[str, float]]] | None, factor: float | None
) -> dict[str, list[str]]:
    """``reason_k`` and its contribution per rank: ``logit_k``, or with a scorecard's ``factor`` (points per
    logit) ``points_k``, the points it cost."""
    if not reasons:
        return {}
    out: dict[str, list[str]] = {}
    for k in range(len(reasons[0])):
        out[f"reason_{k + 1}"] = [row[k][0] for row in reasons]
        if factor is None:
            out[f"logit_{k + 1}"] = [f"{row[k][1]:.4f}" for row in reasons]
        else:
            out[f"points_{k + 1}"] = [f"{-row[k][1] * factor:.1f}" for row in reasons]
    return out


def write_ids(path: Path, ids: list[str], columns: dict[str, list[str]] | None = None) -> None:
    """A CSV of ``id`` and, beside it, each of ``columns`` (values already formatted)."""
    import csv

    columns = columns or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *columns])
        w.writerows(zip(ids, *columns.values(), strict=True))
