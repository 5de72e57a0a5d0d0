"""Local runs: every party (and the dealer) as its own ``mpc-fl`` process, and what a run reports.

The CLI (``mpc-fl run``), the demo and the benchmarks all start runs here, over a fresh
local federation per run, each party given its job as a file (:func:`mpc_fl.app.launch.run_jobs`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpc_fl.app.jobs import (
    AttributeJob,
    AttributeRecord,
    AttributeReport,
    DealerJob,
    Job,
    JobError,
    Links,
    PartyReport,
    RunRecord,
    ScoreJob,
    ScoreRecord,
    ScoreReport,
    ShortlistJob,
    ShortlistRecord,
    ShortlistReport,
    TrainJob,
)
from mpc_fl.app.launch import local_members, run_jobs
from mpc_fl.runtime.identity import key_path
from mpc_fl.runtime.ledger import Ledger
from mpc_fl.runtime.provenance import provenance
from mpc_fl.runtime.roles import BANK, DEALER, provider_roles
from mpc_fl.runtime.session import one_line

if TYPE_CHECKING:
    from mpc_fl.app.serving import DecoySettings

#: Warn when alignment drops more than this share of a party's rows.
DROPPED_WARNING = 0.5


def run_protocol_locally(
    bank: Path,
    providers: list[Path],
    protocol: str,
    options: dict[str, Any],
    out_dir: Path,
    *,
    align: str = "psi",
    split: str = "random",
    split_key: Path | None = None,
    insecure_tfp: bool = False,
    insecure_cleartext: bool = False,
    emulate: tuple[float, float] = (0.0, 0.0),
    connect_timeout: float = 60.0,
    keep_scores: bool = False,
    save_models: Path | None = None,
    quiet: bool = True,
    timeout_s: float = 3600.0,
    features: str = "all",
    release: str = "none",
    groups: str | None = None,
    release_label: str = "partner data",
    importance: bool = False,
) -> RunRecord:
    """Train and score with every party as its own ``mpc-fl party`` process over a fresh local federation.

    Every party's job is built and validated here, before any process starts (a bad parameter,
    choice or combination fails in one line); each child gets its job as a file.
    ``timeout_s``: the whole run's budget; past it every process is stopped and the run fails
    naming the ones still running.

    Returns the run record, also written to ``out_dir/run.json`` (``status`` ``ok``; a failed run
    leaves ``status`` ``failed`` and its one-line error there). ``save_models``: each party writes its part of the model to
    ``<save_models>/<role>.model.npz``. ``quiet=False`` relays the bank's progress lines.
    ``emulate``: (round-trip ms, Mbit/s) every link emulates (:class:`mpc_fl.runtime.mesh.LinkEmulator`).
    ``release``, ``groups``, ``release_label``: what every provider's part releases as reason codes
    (and, with ``importance``, of its feature importance).
    """
    from mpc_fl.protocols import uses_crypten

    roles = [BANK, *provider_roles(len(providers))]
    dealer = uses_crypten(protocol) and not insecure_tfp
    links = _links(out_dir, insecure_cleartext, emulate, connect_timeout)
    own = _own_options(options, dict(zip(roles, [bank, *providers], strict=True)))
    jobs: dict[str, Job] = {
        r: TrainJob(
            role=r, data=str(f), protocol=protocol, options=own[r], links=links(r), align=align,
            split=split, split_key=str(split_key) if split_key and r == BANK else None, keep_scores=keep_scores,
            save_model=str(model_path(save_models, r)) if save_models else None, insecure_tfp=insecure_tfp,
            out=str(out_dir / f"{r}.json"), features=features, importance=importance,
            **({} if r == BANK else {"release": release, "groups": groups, "release_label": release_label}),
        ).validate()  # a bad parameter fails here, before any process starts
        for r, f in zip(roles, [bank, *providers], strict=True)
    }  # fmt: skip
    if dealer:
        jobs[DEALER] = DealerJob(links(DEALER))
    try:
        local_members(out_dir, roles, dealer)  # fresh keys where each job's links point
        reports, wall = run_jobs(jobs, out_dir, relay_progress=not quiet, timeout_s=timeout_s)
    except Exception as err:
        if out_dir.exists():  # the folder says what happened, not just its logs
            failed = {"status": "failed", "error": one_line(err), "protocol": protocol, "params": options}
            (out_dir / "run.json").write_text(json.dumps(failed, indent=1, default=str))
        raise
    parties = {r: PartyReport(**rep) for r, rep in reports.items()}
    bank_report = parties[BANK]
    record = RunRecord(
        status="ok",
        protocol=protocol,
        params=bank_report.params,
        alignment=bank_report.alignment,
        split=bank_report.split,
        dealer="separate dealer process (CrypTen TTP)" if dealer else "none",
        links="cleartext (insecure)" if insecure_cleartext else "TLS 1.3, mutual authentication",
        emulated_network={"rtt_ms": emulate[0], "mbit": emulate[1]} if any(emulate) else None,
        metrics=bank_report.metrics,
        run_info=bank_report.run_info,
        n_aligned=bank_report.n_aligned,
        n_train=bank_report.n_train,
        fit_s=bank_report.fit_s,
        score_s=bank_report.score_s,
        wall_s=wall,
        models={r: p.model for r, p in parties.items()} if save_models else None,
        traffic=Ledger.merge([p.ledger for p in parties.values()]),
        parties=parties,
        provenance=provenance(),
    )
    (out_dir / "run.json").write_text(json.dumps(record.to_dict(), indent=1, default=str))
    return record


def _own_options(options: dict[str, Any], files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each party's options: one command names every party's constrained features, and each party
    gets only its own (:mod:`mpc_fl.models.monotone`); a feature no file has fails here, in one line."""
    from mpc_fl.data.party_table import feature_columns
    from mpc_fl.models.monotone import OPTION, split_among

    if not options.get(OPTION):
        return {r: dict(options) for r in files}
    try:
        parts = split_among(options[OPTION], {r: feature_columns(f) for r, f in files.items()})
    except ValueError as err:
        raise JobError(str(err)) from None
    return {r: {**options, OPTION: parts[r]} for r in files}


def _links(out_dir: Path, insecure_cleartext: bool, emulate: tuple[float, float], connect_timeout: float):  # noqa: ANN202
    """Each member's :class:`Links` in a local run's folder (its key file and its log there)."""

    def links(role: str) -> Links:
        return Links(
            federation=str(out_dir / "federation.toml"), key=str(key_path(out_dir / "keys", role)),
            connect_timeout_s=connect_timeout, insecure_cleartext=insecure_cleartext,
            emulate_rtt_ms=float(emulate[0]), emulate_mbit=float(emulate[1]),
            log=str(out_dir / "logs" / f"{role}.detail.log"),
        )  # fmt: skip

    return links


def model_path(models_dir: Path, role: str) -> Path:
    """Where ``mpc-fl run --save-models DIR`` puts a party's part, and where ``mpc-fl score`` looks for it."""
    return Path(models_dir) / f"{role}.model.npz"


def score_locally(
    bank: Path,
    providers: list[Path],
    models_dir: Path,
    out_dir: Path,
    *,
    align: str = "psi",
    insecure_cleartext: bool = False,
    emulate: tuple[float, float] = (0.0, 0.0),
    connect_timeout: float = 60.0,
    quiet: bool = True,
    timeout_s: float = 3600.0,
    scorecard: str | None = None,
    reasons: int = 0,
    adverse: str = "y1",
) -> ScoreRecord:
    """Score new files with saved parts, every party as its own ``mpc-fl score-party`` process.

    ``scorecard``: the bank's points scale (:meth:`mpc_fl.models.scorecard.Scorecard.parse`).
    ``reasons``: the top R reasons per row toward ``adverse`` (columns of the scores file).
    """
    from mpc_fl.app.store import load_part
    from mpc_fl.protocols import check_reasons, needs_dealer

    roles = [BANK, *provider_roles(len(providers))]
    part = load_part(model_path(models_dir, BANK), role=BANK)  # only its public header is used here
    check_reasons(part.protocol, reasons)
    dealer = needs_dealer(part.protocol, reasons)
    links = _links(out_dir, insecure_cleartext, emulate, connect_timeout)
    jobs: dict[str, Job] = {
        r: ScoreJob(
            role=r, data=str(f), model=str(model_path(models_dir, r)), links=links(r), align=align,
            out=str(out_dir / f"{r}.json"), scores=str(out_dir / "scores.csv") if r == BANK else None,
            scorecard=scorecard if r == BANK else None, reasons=reasons, adverse=adverse,
        ).validate()
        for r, f in zip(roles, [bank, *providers], strict=True)
    }  # fmt: skip
    if dealer:
        jobs[DEALER] = DealerJob(links(DEALER))
    local_members(out_dir, roles, dealer)
    reports, wall = run_jobs(jobs, out_dir, relay_progress=not quiet, timeout_s=timeout_s)
    parties = {r: ScoreReport(**rep) for r, rep in reports.items()}
    return ScoreRecord(
        protocol=part.protocol,
        model=part.fingerprint,
        n_aligned=parties[BANK].n_aligned,
        score_s=parties[BANK].score_s,
        wall_s=wall,
        scores_file=str(out_dir / "scores.csv"),
        traffic=Ledger.merge([p.ledger for p in parties.values()]),
        parties=parties,
        provenance=provenance(),
    )


def stability_figure(psi: dict[str, dict[str, float]], path: Path) -> Path:
    """One bar per feature (and the score), per party: the stability index, the warning line at 0.25."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mpc_fl.models.stability import WARN

    rows = [(f"{role}: {name}", v) for role, values in psi.items() for name, v in values.items()]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.2))
    ax.barh(
        [n for n, _ in rows],
        [v for _, v in rows],
        color=["#d62728" if v > WARN else "#1f77b4" for _, v in rows],
    )
    ax.axvline(WARN, ls="--", c="k", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("population stability index, scored rows against training rows (each party its own)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def shortlist_locally(
    prospects: Path,
    models_dir: Path,
    out_dir: Path,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    reveal_scores: bool = False,
    drop_known: bool = False,
    id_col: str = "id",
    insecure_cleartext: bool = False,
    emulate: tuple[float, float] = (0.0, 0.0),
    connect_timeout: float = 60.0,
    quiet: bool = True,
    timeout_s: float = 3600.0,
) -> ShortlistRecord:
    """The platform's shortlist from its prospects with a saved prospect model, each party a process."""
    provider = provider_roles(1)[0]
    links = _links(out_dir, insecure_cleartext, emulate, connect_timeout)
    shortlist_file = out_dir / "shortlist.csv"
    jobs: dict[str, Job] = {
        BANK: ShortlistJob(
            role=BANK, model=str(model_path(models_dir, BANK)), links=links(BANK), top_k=top_k,
            threshold=threshold, reveal_scores=reveal_scores, out=str(out_dir / f"{BANK}.json"),
        ).validate(),
        provider: ShortlistJob(
            role=provider, model=str(model_path(models_dir, provider)), links=links(provider), data=str(prospects),
            id_col=id_col, reveal_scores=reveal_scores, drop_known=drop_known, shortlist=str(shortlist_file),
            out=str(out_dir / f"{provider}.json"),
        ).validate(),
        DEALER: DealerJob(links(DEALER)),
    }  # fmt: skip
    local_members(out_dir, [BANK, provider], True)
    reports, wall = run_jobs(jobs, out_dir, relay_progress=not quiet, timeout_s=timeout_s)
    parties = {r: ShortlistReport(**rep) for r, rep in reports.items()}
    return ShortlistRecord(
        protocol=parties[BANK].protocol, model=parties[BANK].model, selection=parties[BANK].selection,
        n_scored=parties[BANK].n_scored, k=parties[provider].k, score_s=parties[BANK].score_s, wall_s=wall,
        shortlist_file=str(shortlist_file), traffic=Ledger.merge([p.ledger for p in parties.values()]),
        parties=parties, provenance=provenance(),
    )  # fmt: skip


def attribute_locally(
    referred: Path,
    takeups: Path,
    out_dir: Path,
    *,
    points_per_takeup: int = 0,
    id_col: str = "id",
    align: str = "psi",
    insecure_cleartext: bool = False,
    emulate: tuple[float, float] = (0.0, 0.0),
    connect_timeout: float = 60.0,
    quiet: bool = True,
    timeout_s: float = 3600.0,
) -> AttributeRecord:
    """Which referred SMEs took up a product: the platform's and the bank's lists in one PSI."""
    provider = provider_roles(1)[0]
    links = _links(out_dir, insecure_cleartext, emulate, connect_timeout)
    matches = {r: str(out_dir / f"{r}.matches.csv") for r in (BANK, provider)}
    jobs: dict[str, Job] = {
        BANK: AttributeJob(
            role=BANK, data=str(takeups), links=links(BANK), id_col=id_col, align=align, matches=matches[BANK],
            out=str(out_dir / f"{BANK}.json"),
        ).validate(),
        provider: AttributeJob(
            role=provider, data=str(referred), links=links(provider), id_col=id_col, align=align,
            points_per_takeup=points_per_takeup, matches=matches[provider], out=str(out_dir / f"{provider}.json"),
        ).validate(),
    }  # fmt: skip
    local_members(out_dir, [BANK, provider], False)
    reports, wall = run_jobs(jobs, out_dir, relay_progress=not quiet, timeout_s=timeout_s)
    parties = {r: AttributeReport(**rep) for r, rep in reports.items()}
    return AttributeRecord(
        n_matched=parties[BANK].n_matched, points=parties[provider].points, wall_s=wall, matches=matches,
        traffic=Ledger.merge([p.ledger for p in parties.values()]), parties=parties, provenance=provenance(),
    )  # fmt: skip


def alignment_summary(parties: dict[str, PartyReport]) -> tuple[str, list[str]]:
    """One clause on alignment for the result line, and a warning per party that lost most of its rows."""
    n_aligned = next(iter(parties.values())).n_aligned
    parts, warnings = [], []
    for role, rep in parties.items():
        n_in, dropped = rep.n_input, rep.n_input - rep.n_aligned
        parts.append(f"{role} dropped {dropped:,} of {n_in:,}")
        if n_in and dropped / n_in > DROPPED_WARNING:
            warnings.append(
                f"warning: alignment dropped {dropped / n_in:.0%} of {role}'s rows ({dropped:,} of {n_in:,}): "
                f"check that the parties use the same customer ids"
            )
    return f"{n_aligned:,} customers aligned ({'; '.join(parts)})", warnings


def result_line(record: RunRecord) -> str:
    """The line a finished run prints: quality, alignment, time and traffic."""
    m, traffic = record.metrics, record.traffic["total"]
    quality = f"AUC {m['auc']:.4f}  KS {m['ks']:.4f}" if m else "no scores at this party"
    aligned, _ = alignment_summary(record.parties)
    sent = traffic["bytes_sent"] / 1e6
    return (
        f"{record.protocol}: {quality} | {aligned} | fit {record.fit_s:.1f} s, wall {record.wall_s:.1f} s | "
        f"{sent:,.2f} MB sent in {traffic['rounds']:,} rounds"
    )


class LocalService:
    """A scoring service on this machine: provider and dealer services as processes, the bank's here.

    For the demo, tests and benchmarks; on real hosts each member runs ``mpc-fl serve`` (and the
    dealer ``mpc-fl dealer --forever``) itself. Fresh keys and ports per deployment.
    """

    def __init__(
        self, models_dir: Path, bank_csv: Path, provider_csv: Path, work_dir: Path, *,
        decoys: DecoySettings | None = None, reasons: int = 0, adverse: str = "y1",
    ):  # fmt: skip
        """``reasons``: the top R reasons toward ``adverse`` with every score (every party is told)."""
        import sys

        from mpc_fl.app.serving import BankService, FeatureStore, ServiceSettings
        from mpc_fl.app.store import load_part
        from mpc_fl.protocols import needs_dealer
        from mpc_fl.runtime.federation import federation_text, load_federation, local_federation

        protocol = load_part(model_path(models_dir, "bank"), role="bank").protocol
        fed, self.keys = local_federation(
            ("bank", "provider"), work_dir / "keys", dealer=needs_dealer(protocol, reasons)
        )
        self.reasons = ["--reasons", str(reasons), "--adverse", adverse]
        self.fed_file = work_dir / "federation.toml"
        self.fed_file.write_text(federation_text(list(fed.members)))
        self.models_dir, self.work_dir = models_dir, work_dir
        self.provider_db = work_dir / "provider.sqlite"
        FeatureStore.from_csv(provider_csv, self.provider_db)  # the provider's own table
        self._cli = [sys.executable, "-m", "mpc_fl.app.cli"]
        self.procs: dict[str, Any] = {}
        if fed.dealer:
            self.start("dealer")
        self.start("provider")
        store = FeatureStore.from_csv(bank_csv, work_dir / "bank.sqlite")
        settings = ServiceSettings(
            load_federation(self.fed_file, connect_timeout_s=60), "bank", self.keys["bank"],
            model_path(models_dir, "bank"), store, reasons=reasons, adverse=adverse,
        )  # fmt: skip
        try:
            self.bank = BankService(settings, decoys=decoys).start(timeout_s=120)
        except BaseException:
            self._kill_all()
            raise

    def start(self, role: str, models_dir: Path | None = None) -> None:
        """Start (or restart, e.g. with another model) a provider's or the dealer's service process."""
        import subprocess

        common = ["--federation", str(self.fed_file), "--key", str(self.keys[role]), "--connect-timeout", "60",
                  "--quiet", "--log", str(self.work_dir / f"{role}.log")]  # fmt: skip
        if role == "dealer":
            cmd = [*self._cli, "dealer", "--forever", *common]
        else:
            part = model_path(models_dir or self.models_dir, role)
            cmd = [
                *self._cli,
                "serve",
                "--role",
                role,
                "--model",
                str(part),
                "--features",
                str(self.provider_db),
                *self.reasons,
                *common,
            ]
        with open(self.work_dir / f"{role}.out", "ab") as out:  # its one-line messages, for the curious
            self.procs[role] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def kill(self, role: str) -> None:
        self.procs[role].kill()
        self.procs[role].wait()

    def stop(self) -> None:
        self.bank.stop()
        self._kill_all()

    def _kill_all(self) -> None:
        for p in self.procs.values():
            p.kill()
            p.wait()
