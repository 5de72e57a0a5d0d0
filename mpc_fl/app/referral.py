"""The referral job: score the platform's own SMEs, hand it a shortlist, attribute the take-ups.

Behind ``mpc-fl shortlist-party`` and ``mpc-fl attribute-party`` (and their local runs).

Shortlist. A prospect model (``mpc-fl run --features providers``: the bank's labels, the
providers' features) scores SMEs that only the platform knows. The platform inputs its rows, the
bank its part of the model; the margins stay secret-shared (each protocol's
:meth:`~mpc_fl.protocols.base.VerticalProtocol.prospect_margins`), and the list is chosen on
the shares (:mod:`mpc_fl.crypto.shortlist`): the top K, or every row at or above a threshold
that the bank keeps secret. What each party learns:

* platform: which of its rows are on the list (so K), and nothing else of the scores or the
  model, unless both parties agree to ``--reveal-scores`` (then it learns every prospect's
  score: the bank's model evaluated on its rows, enough to fit a copy of it on its own features);
* bank: how many rows the platform scored, and K (under ``--threshold``, the count at or above
  it); never an id, a feature or a score of a prospect.

The shortlist step runs on CrypTen shares with the dealer whatever the model's protocol, so the
HE baselines' prospects are scored under the dealer's trust assumption too (it colludes with
nobody). A model's own leakage stays what its protocol states: under Paillier LR the platform
holds its weights in the clear and can rank its prospects alone; the list adds nothing to that.

Attribution. The platform inputs the SMEs it referred, the bank its product take-ups; one PSI
(:mod:`mpc_fl.psi.align`) gives each exactly the intersection (which referred SMEs took up a
product; which take-ups were referred) and the size of the other's list, nothing else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mpc_fl.app.jobs import AttributeJob, AttributeReport, ShortlistJob, ShortlistReport
from mpc_fl.app.party import (
    LoadedModel,
    check_columns,
    listen_address,
    load_model,
    member_federation,
    peers_told_on_failure,
    write_ids,
    write_report,
)
from mpc_fl.app.store import ModelPartError
from mpc_fl.data.errors import DataError
from mpc_fl.data.party_table import PartyTable
from mpc_fl.protocols.base import Context, LocalData
from mpc_fl.runtime.roles import BANK


def check_prospect_model(model: LoadedModel, path: str) -> None:
    """A prospect is not a bank customer: only a model without the bank's features can score one."""
    uses_bank_features = model.part.role == BANK and bool(model.part.feature_names)
    if model.part.meta.get("features") != "providers" or uses_bank_features:
        raise ModelPartError(
            f"{path}: this model uses the bank's features, which a prospect does not have; "
            f"train a prospect model with `--features providers`"
        )
    if len(model.part.parties) != 2:
        raise ModelPartError(f"{path}: the shortlist is a two-party job (the bank and the platform)")


def without_known(table: PartyTable, model: LoadedModel, drop: bool) -> tuple[PartyTable, int]:
    """The provider's prospects minus the customers the model was trained on (the bank's own).

    Those are the bank's customers already; scoring them as prospects would refer them again.
    Refused in one line unless ``drop`` (then left out, and counted in the report).
    """
    known = model.part.arrays.get("known_ids")
    if known is None or not len(known):
        return table, 0
    is_known = np.isin(np.asarray(table.ids).astype(str), np.asarray(known).astype(str))
    n = int(is_known.sum())
    if n and not drop:
        example = table.ids[np.flatnonzero(is_known)[0]]
        raise DataError(
            f"{table.source}: {n:,} of the {table.n_rows:,} prospects (e.g. {example}) are customers the "
            f"model was trained on, i.e. already the bank's; leave them out, or pass --drop-known"
        )
    if n == table.n_rows:
        raise DataError(f"{table.source}: every prospect is already a bank customer; nothing to score")
    return table.take(np.flatnonzero(~is_known)), n


def _selection(job: ShortlistJob) -> dict:
    if job.top_k is not None:
        return {"selection": "top_k", "k": int(job.top_k)}
    return {"selection": "threshold", "k": None}


def shortlist_party(
    ctx: Context, model: LoadedModel, table: PartyTable | None, job: ShortlistJob
) -> ShortlistReport:
    """One party's side of the shortlist: the bank with its model part only, the provider with its rows."""
    import torch

    from mpc_fl.crypto import shortlist
    from mpc_fl.crypto.secure_crypten import crypten

    ch = ctx.channel
    provider = next(r for r in ctx.roles if r != BANK)
    provider_rank = ctx.roles.index(provider)
    with ch.phase("prospects"):
        if ctx.role == BANK:
            ch.send_json(provider, _selection(job))
            n = int(ch.recv_json(provider)["n"])
            chosen = _selection(job)
        else:
            chosen = ch.recv_json(BANK)
            n = table.n_rows
            ch.send_json(BANK, {"n": n})
        k = chosen["k"]
        if k is not None and k > n:
            raise DataError(
                f"the bank asks for the top {k:,} of {n:,} prospects; --top-k must be at most {n:,}"
            )
        ctx.progress.note(f"scoring {n:,} prospects ({chosen['selection']})")
        t0 = time.perf_counter()
        X = model.scaler.transform(table.X) if table is not None else np.zeros((n, 0))
        z = model.protocol.prospect_margins(ctx, LocalData(X, None, tuple(model.part.feature_names)))
        if k is not None:
            bits = shortlist.top_k(z, k, rank=ctx.rank, tie_breaker=provider_rank)
        else:
            cut = math.log(job.threshold / (1 - job.threshold)) if ctx.role == BANK else 0.0
            threshold = crypten.cryptensor(torch.tensor([cut]), src=0)  # the bank's secret
            bits = shortlist.above_threshold(z, threshold)
            count = bits.sum().get_plain_text(dst=0)  # K, to the bank (the platform counts its list)
            k = int(count.round().item()) if ctx.role == BANK else None
        member = bits.get_plain_text(dst=provider_rank)
        scores = z.get_plain_text(dst=provider_rank) if job.reveal_scores else None
        score_s = time.perf_counter() - t0
    report = ShortlistReport(
        role=ctx.role, protocol=model.part.protocol, model=model.part.fingerprint,
        selection=chosen["selection"], n_scored=n, k=k, score_s=score_s, ledger=ch.ledger.to_dict(),
    )  # fmt: skip
    if ctx.role != BANK:
        on_list = member.round().long().numpy().astype(bool)
        report.k = int(on_list.sum())
        report.shortlist = [str(i) for i in table.ids[on_list]]
        if scores is not None:  # opened for every prospect; the list keeps those on it
            probability = 1 / (1 + np.exp(-scores.double().numpy()))
            report.scores = [float(p) for p in probability[on_list]]
    if not report.k:
        at = f" {job.threshold}" if ctx.role == BANK else ""
        raise DataError(
            f"the shortlist is empty: no prospect reaches the bank's threshold{at}; lower it or use --top-k"
        )
    return report


def shortlist(job: ShortlistJob, say: Callable[[BaseException], None]) -> ShortlistReport:
    """Run one party's shortlist job: its own files first, then the federation; write its outputs."""
    from mpc_fl.data.party_table import load_party_csv

    n_known = 0
    with peers_told_on_failure(job, say):
        model = load_model(Path(job.model), job.role)  # refuses another role's part or another version
        check_prospect_model(model, job.model)
        table = None
        if job.role != BANK:
            table = load_party_csv(job.data, role="provider", id_col=job.id_col)
            check_columns(table, model)
            table, n_known = without_known(table, model, job.drop_known)
    fed = member_federation(job)
    from mpc_fl.runtime.session import connect, process_age_s

    hello = {
        "mode": "shortlist",
        "protocol": model.part.protocol,
        "model": model.part.fingerprint,
        "reveal_scores": job.reveal_scores,
    }
    with connect(
        fed, job.role, Path(job.links.key), uses_crypten=True, listen=listen_address(job.links), hello=hello,
        quiet=job.links.quiet, dealer=True,
    ) as session:  # fmt: skip
        report = shortlist_party(session, model, table, job)
    report.n_dropped_known = n_known
    report.wall_s = process_age_s()
    write_report(job.out, report)
    if report.shortlist is not None and job.shortlist:
        scores = None if report.scores is None else {"score": [f"{v:.6f}" for v in report.scores]}
        write_ids(Path(job.shortlist), report.shortlist, scores)
    return report


def attribute(job: AttributeJob, say: Callable[[BaseException], None]) -> AttributeReport:
    """Run one party's attribution: a PSI of its list with the other's; each writes the matches."""
    from mpc_fl.data.party_table import load_party_csv
    from mpc_fl.psi.align import id_sort_key, private_intersection

    with peers_told_on_failure(job, say):
        table = load_party_csv(job.data, role="ids", id_col=job.id_col)
    fed = member_federation(job)
    if len(fed.roles) != 2:
        raise ValueError(f"attribution is a two-party job (the bank and the platform); got {fed.roles}")
    from mpc_fl.runtime.session import connect, process_age_s

    hello = {"mode": "attribute", "alignment": job.align}
    with connect(
        fed, job.role, Path(job.links.key), uses_crypten=False, listen=listen_address(job.links), hello=hello,
        quiet=job.links.quiet, dealer=False,
    ) as session:  # fmt: skip
        peer = next(r for r in session.roles if r != job.role)
        session.progress.note(f"matching {table.n_rows:,} ids ({job.align})")
        with session.channel.phase("alignment"):
            result = private_intersection(session.channel, table.ids, peer, job.align)
        ids = table.ids[result.indices]
        matched = [str(i) for i in ids[id_sort_key(ids)]]
        report = AttributeReport(
            role=job.role, n_input=table.n_rows, n_peer=int(result.n_peer), n_matched=len(matched),
            matched=matched, points=len(matched) * job.points_per_takeup, ledger=session.channel.ledger.to_dict(),
        )  # fmt: skip
    report.wall_s = process_age_s()
    write_report(job.out, report)
    if job.matches:
        write_ids(Path(job.matches), matched)
    return report
