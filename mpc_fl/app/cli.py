"""Command line: ``mpc-fl keygen``, ``federation``, ``protocols``, ``party``, ``dealer``, ``run``, ``demo``.

Every process, the dealer included, exits with 0 only when its run succeeded. A failure
prints one line on stderr (exit 2 for what a user can fix: input, federation, a peer that
is missing or stopped; exit 1 for an internal error, whose traceback goes to the log file).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from mpc_fl.app.serving.decoys import DECOY_POLICIES, DEFAULT_DECOYS

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1

log = logging.getLogger("mpc_fl")


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--param expects key=value, got {pair!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _links(args: argparse.Namespace):  # noqa: ANN202 - a Links
    from mpc_fl.app.jobs import Links

    if not (args.federation and args.key):
        raise ValueError(f"`mpc-fl {args.command}` needs --federation and --key (or --job FILE)")
    return Links(
        federation=args.federation, key=args.key, listen=args.listen, connect_timeout_s=args.connect_timeout,
        insecure_cleartext=args.insecure_cleartext, emulate_rtt_ms=args.emulate_rtt_ms,
        emulate_mbit=args.emulate_mbit, quiet=args.quiet, log=args.log,
    )  # fmt: skip


def _federation(args: argparse.Namespace):  # noqa: ANN202 - a Federation
    from mpc_fl.app.party import federation_of

    return federation_of(_links(args))


def _listen(args: argparse.Namespace) -> tuple[str, int] | None:
    from mpc_fl.runtime.federation import parse_address

    return parse_address(args.listen) if args.listen else None


def _add_link_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds, from when this process is ready to connect, to reach every peer",
    )
    p.add_argument(
        "--insecure-cleartext",
        action="store_true",
        help="DEBUG ONLY: plain TCP links, no authentication or encryption (anyone on the path sees everything)",
    )
    p.add_argument(
        "--emulate-rtt-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="EXPERIMENTS: delay every outgoing frame by half this round-trip time (give every member the same)",
    )
    p.add_argument(
        "--emulate-mbit",
        type=float,
        default=0.0,
        metavar="MBIT",
        help="EXPERIMENTS: pace every outgoing link at this many Mbit/s (0: unpaced)",
    )


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--log", default=None, metavar="FILE", help="write details (warnings, tracebacks) here")


def _add_member_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--federation", help="the federation file (members, addresses, certificates)")
    p.add_argument("--key", help="this member's key file (from `mpc-fl keygen`)")
    p.add_argument(
        "--listen", default=None, metavar="HOST:PORT", help="listen here instead of the federation address"
    )
    _add_link_args(p)
    _add_output_args(p)


def _job(args: argparse.Namespace, build):  # noqa: ANN001, ANN202 - the command's job
    """The job of ``--job FILE``, else the one its flags describe; validated either way, once."""
    from mpc_fl.app.jobs import read_job

    job = read_job(Path(args.job)) if args.job else build(args).validate()
    args.role, args.log = job.role, job.links.log  # the job names who is speaking and where details go
    return job


def _train_job(args: argparse.Namespace):  # noqa: ANN202 - a TrainJob
    from mpc_fl.app.jobs import TrainJob

    if not (args.role and args.data):
        raise ValueError("`mpc-fl party` needs --role and --data (or --job FILE)")
    return TrainJob(
        role=args.role, data=args.data, protocol=args.protocol, options=parse_options(args.param),
        links=_links(args), id_col=args.id_col, align=args.align, split=args.split, split_key=args.split_key,
        keep_scores=args.keep_scores, save_model=args.save_model, insecure_tfp=args.insecure_tfp, out=args.out,
        features=args.features, release=args.release, groups=args.groups, release_label=args.release_label,
        importance=args.importance,
    )  # fmt: skip


def _score_job(args: argparse.Namespace):  # noqa: ANN202 - a ScoreJob
    from mpc_fl.app.jobs import ScoreJob

    if not (args.role and args.data and args.model):
        raise ValueError("`mpc-fl score-party` needs --role, --data and --model (or --job FILE)")
    return ScoreJob(
        role=args.role, data=args.data, model=args.model, links=_links(args), id_col=args.id_col,
        label_col=args.label_col, align=args.align, out=args.out, scores=args.scores, scorecard=args.scorecard,
        reasons=args.reasons, adverse=args.adverse,
    )  # fmt: skip


def _shortlist_job(args: argparse.Namespace):  # noqa: ANN202 - a ShortlistJob
    from mpc_fl.app.jobs import ShortlistJob

    if not (args.role and args.model):
        raise ValueError("`mpc-fl shortlist-party` needs --role and --model (or --job FILE)")
    return ShortlistJob(
        role=args.role, model=args.model, links=_links(args), data=args.data, id_col=args.id_col,
        top_k=args.top_k, threshold=args.threshold, reveal_scores=args.reveal_scores,
        drop_known=args.drop_known, shortlist=args.shortlist, out=args.out,
    )  # fmt: skip


def _attribute_job(args: argparse.Namespace):  # noqa: ANN202 - an AttributeJob
    from mpc_fl.app.jobs import AttributeJob

    if not (args.role and args.data):
        raise ValueError("`mpc-fl attribute-party` needs --role and --data (or --job FILE)")
    return AttributeJob(
        role=args.role, data=args.data, links=_links(args), id_col=args.id_col, align=args.align,
        points_per_takeup=args.points_per_takeup, matches=args.matches, out=args.out,
    )  # fmt: skip


def _dealer_job(args: argparse.Namespace):  # noqa: ANN202 - a DealerJob
    from mpc_fl.app.jobs import DealerJob

    return DealerJob(_links(args), forever=args.forever)


def _say_first(args: argparse.Namespace):  # noqa: ANN202
    """How a party whose own input is bad gives its line before it tells the others."""

    def say(err: BaseException) -> None:
        _report(args, err, Path(args.log) if args.log else None)
        err.add_note(_REPORTED)

    return say


_REPORTED = "mpc_fl: already reported"


def cmd_party(args: argparse.Namespace) -> int:
    from mpc_fl.app.party import train

    report = train(args.job_, _say_first(args))
    _print_party_result(report)
    return 0


def _print_party_result(report) -> None:  # noqa: ANN001
    from mpc_fl.app.local import DROPPED_WARNING

    quality = ", ".join(f"{k} {v:.4f}" for k, v in report.metrics.items() if k in ("auc", "ks"))
    dropped = report.n_input - report.n_aligned
    sent = report.ledger["total"]["bytes_sent"] / 1e6
    print(
        f"[{report.role}] {report.protocol}: {quality or 'scores went to the bank'} | "
        f"{report.n_aligned:,} customers aligned, {dropped:,} of this party's {report.n_input:,} rows dropped | "
        f"fit {report.fit_s:.1f} s, wall {report.wall_s:.1f} s | {sent:,.2f} MB sent"
    )
    if report.n_input and dropped / report.n_input > DROPPED_WARNING:
        print(
            f"[{report.role}] warning: alignment dropped {dropped / report.n_input:.0%} of this party's rows: "
            f"check that the parties use the same customer ids",
            file=sys.stderr,
        )


def cmd_score_party(args: argparse.Namespace) -> int:
    from mpc_fl.app.party import score

    job = args.job_
    report = score(job, _say_first(args))
    unscored = report.n_input - report.n_aligned
    print(
        f"[{job.role}] {report.protocol} model {report.model[:12]}: scored {report.n_aligned:,} customers "
        f"({unscored:,} of this party's {report.n_input:,} rows are not at every party) in {report.score_s:.2f} s"
        + (f" -> {job.scores}" if report.scores is not None and job.scores else "")
    )
    _warn_drift(job.role, report.stability)
    return 0


def _warn_drift(role: str, psi: dict[str, float]) -> None:
    from mpc_fl.models.stability import WARN, drifted

    names = drifted(psi)
    if names:
        listed = ", ".join(f"{n} {psi[n]:.2f}" for n in names)
        print(
            f"[{role}] warning: population drift since training (stability index > {WARN}): {listed}",
            file=sys.stderr,
        )


def cmd_shortlist_party(args: argparse.Namespace) -> int:
    from mpc_fl.app.referral import shortlist

    job = args.job_
    report = shortlist(job, _say_first(args))
    print(
        shortlist_line(job.role, report)
        + (f" -> {job.shortlist}" if report.shortlist and job.shortlist else "")
    )
    return 0


def shortlist_line(role: str, report) -> str:  # noqa: ANN001 - a ShortlistReport
    how = "the top K" if report.selection == "top_k" else "at or above the bank's threshold"
    said = (
        ""
        if role == "bank"
        else (" with their scores" if report.scores is not None else ", not their scores")
    )
    dropped = f", {report.n_dropped_known:,} known customers left out" if report.n_dropped_known else ""
    return (
        f"[{role}] {report.protocol} prospect model {report.model[:12]}: {report.k:,} of {report.n_scored:,} "
        f"prospects on the shortlist ({how}{said}{dropped}) in {report.score_s:.2f} s"
    )


def cmd_attribute_party(args: argparse.Namespace) -> int:
    from mpc_fl.app.referral import attribute

    job = args.job_
    report = attribute(job, _say_first(args))
    print(attribution_line(job.role, report) + (f" -> {job.matches}" if job.matches else ""))
    return 0


def attribution_line(role: str, report) -> str:  # noqa: ANN001 - an AttributeReport
    mine, theirs = ("referred SMEs", "take-ups") if role != "bank" else ("take-ups", "referred SMEs")
    points = f"; {report.points:,} reward points" if report.points else ""
    return (
        f"[{role}] {report.n_matched:,} of its {report.n_input:,} {mine} are among the other side's "
        f"{report.n_peer:,} {theirs}{points}"
    )


def cmd_shortlist(args: argparse.Namespace) -> int:
    from mpc_fl.app.local import shortlist_locally

    out_dir = Path(args.out_dir) / f"shortlist-{time.strftime('%Y%m%d-%H%M%S')}"
    record = shortlist_locally(
        Path(args.prospects), Path(args.models), out_dir, top_k=args.top_k, threshold=args.threshold,
        reveal_scores=args.reveal_scores, drop_known=args.drop_known, id_col=args.id_col,
        insecure_cleartext=args.insecure_cleartext, connect_timeout=args.connect_timeout,
        emulate=(args.emulate_rtt_ms, args.emulate_mbit), quiet=args.quiet,
    )  # fmt: skip
    (out_dir / "shortlist.json").write_text(json.dumps(record.to_dict(), indent=1, default=str))
    for role, report in record.parties.items():
        print(shortlist_line(role, report))
    print(f"shortlist (the platform's) -> {record.shortlist_file}")
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    from mpc_fl.app.local import attribute_locally

    out_dir = Path(args.out_dir) / f"attribute-{time.strftime('%Y%m%d-%H%M%S')}"
    record = attribute_locally(
        Path(args.referred), Path(args.takeups), out_dir, points_per_takeup=args.points_per_takeup,
        id_col=args.id_col, align=args.align, insecure_cleartext=args.insecure_cleartext,
        connect_timeout=args.connect_timeout, emulate=(args.emulate_rtt_ms, args.emulate_mbit), quiet=args.quiet,
    )  # fmt: skip
    (out_dir / "attribution.json").write_text(json.dumps(record.to_dict(), indent=1, default=str))
    for role, report in record.parties.items():
        print(attribution_line(role, report) + f" -> {record.matches[role]}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from mpc_fl.app.local import score_locally

    out_dir = Path(args.out_dir) / f"score-{time.strftime('%Y%m%d-%H%M%S')}"
    record = score_locally(
        Path(args.bank), [Path(p) for p in args.provider], Path(args.models), out_dir,
        align=args.align, insecure_cleartext=args.insecure_cleartext, connect_timeout=args.connect_timeout,
        emulate=(args.emulate_rtt_ms, args.emulate_mbit), quiet=args.quiet, scorecard=args.scorecard,
        reasons=args.reasons, adverse=args.adverse,
    )  # fmt: skip
    (out_dir / "score.json").write_text(json.dumps(record.to_dict(), indent=1, default=str))
    print(
        f"{record.protocol} model {record.model[:12]}: scored {record.n_aligned:,} customers in "
        f"{record.score_s:.2f} s (wall {record.wall_s:.1f} s) -> {record.scores_file}"
    )
    psi = {r: p.stability for r, p in record.parties.items()}
    if any(psi.values()):
        from mpc_fl.app.local import stability_figure

        print(f"population stability per party -> {stability_figure(psi, out_dir / 'stability.png')}")
    for role, values in psi.items():
        _warn_drift(role, values)
    return 0


def _feature_store(args: argparse.Namespace, model_path: Path, role: str):  # noqa: ANN202 - a FeatureStore
    """The party's own features by id: an SQLite table, or its CSV loaded into a temporary one."""
    import tempfile

    from mpc_fl.app.serving import FeatureStore
    from mpc_fl.app.store import load_part

    source = Path(args.features)
    if source.suffix.lower() == ".csv":
        db = Path(tempfile.mkdtemp(prefix=f"mpc-fl-{role}-")) / "features.sqlite"
        return FeatureStore.from_csv(source, db, id_col=args.id_col)
    columns = load_part(model_path, role=role).feature_names  # only the model's columns are read
    return FeatureStore(source, table=args.table, id_col=args.id_col, columns=columns)


def _endpoint_settings(args: argparse.Namespace):  # noqa: ANN202 - an EndpointSettings
    """``--http [HOST]:PORT`` and its token, checked before anything connects."""
    from mpc_fl.app.serving import EndpointSettings, token_from_file

    host, sep, port = args.http.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--http {args.http!r}: give [HOST]:PORT, e.g. 127.0.0.1:8080")
    token = None
    if not args.http_no_auth:
        token_file = Path(args.http_token_file or Path(args.key).with_name("bank.score-token"))
        token = token_from_file(token_file)
    cert, cert_key = (Path(f) if f else None for f in (args.http_certificate, args.http_certificate_key))
    settings = EndpointSettings(
        host=host.strip("[]") or "127.0.0.1",
        port=int(port),
        token=token,
        certificate=cert,
        certificate_key=cert_key,
    )
    settings.validate()
    if token is not None:
        print(
            f"[bank] /score needs 'Authorization: Bearer <token>', the token is in {token_file}", flush=True
        )
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses
    import signal

    from mpc_fl.app.jobs import MAX_REASONS
    from mpc_fl.app.serving import (
        SERVICE_OP_TIMEOUT_S,
        BankService,
        DecoySettings,
        ServiceSettings,
        serve_http,
        serve_provider,
    )

    if not 0 <= args.reasons <= MAX_REASONS:
        raise ValueError(f"--reasons must be 0 to {MAX_REASONS}, got {args.reasons}")
    if args.stability_window < 10:
        raise ValueError(f"--stability-window must be at least 10 rows, got {args.stability_window}")
    role = args.role
    fed = _federation(args)
    if role not in fed.roles:
        raise ValueError(f"--role {role!r} is not a computing party of the federation {fed.roles}")
    decoys = DecoySettings(
        args.decoys, args.decoys_policy, Path(args.decoy_sets) if args.decoy_sets else None
    )
    if role == "bank":  # every option checked before any file is read or any party contacted
        decoys.validate()
        endpoint = _endpoint_settings(args) if args.http else None
    model_path = Path(args.model)
    store = _feature_store(args, model_path, role)
    if role != "bank":  # a provider waits for the bank's next query as long as the service runs
        fed = dataclasses.replace(fed, op_timeout_s=SERVICE_OP_TIMEOUT_S)
        settings = ServiceSettings(
            fed,
            role,
            Path(args.key),
            model_path,
            store,
            _listen(args),
            args.quiet,
            args.reasons,
            args.adverse,
            args.stability_window,
        )
        print(f"[{role}] scoring service: answering the bank's queries (Ctrl-C to stop)", flush=True)
        serve_provider(settings)
        return 0
    settings = ServiceSettings(
        fed, role, Path(args.key), model_path, store, _listen(args), args.quiet, args.reasons, args.adverse,
        args.stability_window,
    )  # fmt: skip
    service = BankService(settings, decoys=decoys)
    server = serve_http(service, endpoint) if endpoint else None  # bound before anyone connects
    service.start()
    where = f"; POST {server.url}/score" if server else ""
    hiding = (
        f"each applicant sent among {decoys.k}+ decoys" if decoys.k else "the provider sees every applicant"
    )
    print(
        f"[bank] scoring service for {service.model.part.describe()} ({hiding}){where} (Ctrl-C to stop)",
        flush=True,
    )
    if server and endpoint.token is None:
        print(
            "[bank] warning: /score has no authentication (--http-no-auth); any local user can call it",
            flush=True,
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    if server is not None:
        server.shutdown()
    service.stop()
    return 0


def cmd_dealer(args: argparse.Namespace) -> int:
    import dataclasses

    from mpc_fl.app.party import federation_of
    from mpc_fl.app.serving import SERVICE_OP_TIMEOUT_S
    from mpc_fl.runtime.federation import parse_address
    from mpc_fl.runtime.session import serve_dealer

    job = args.job_
    fed = federation_of(job.links)
    if job.forever:  # a scoring service's dealer idles between queries and joins again after each session
        fed = dataclasses.replace(fed, op_timeout_s=SERVICE_OP_TIMEOUT_S)
    listen = parse_address(job.links.listen) if job.links.listen else None
    served = serve_dealer(fed, Path(job.links.key), listen=listen, forever=job.forever)
    print(f"[dealer] run complete: served {served:,} requests")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from mpc_fl.runtime.identity import make_identity

    key, cert = make_identity(args.role, Path(args.out_dir))
    print(f"{args.role}: private key {key} (keep it; mode 0600), certificate {cert} (share it)")
    return 0


def cmd_federation(args: argparse.Namespace) -> int:
    from mpc_fl.runtime.federation import Member, certificate_path, parse_address, write_federation

    members = []
    for spec in args.members:
        role, sep, address = spec.partition("=")
        if not sep:
            raise ValueError(f"expected ROLE=HOST:PORT, got {spec!r}")
        host, port = parse_address(address)
        cert = certificate_path(Path(args.certs), role)
        if not cert.is_file():
            raise ValueError(
                f"{cert}: no certificate for {role!r} (each member runs `mpc-fl keygen --role {role}`)"
            )
        members.append(Member(role, host, port, cert.read_text()))
    write_federation(Path(args.out), members)
    print(f"wrote {args.out}: " + ", ".join(f"{m.role} at {m.address}" for m in members))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mpc_fl.app.local import alignment_summary, result_line, run_protocol_locally

    out_dir = Path(args.out_dir) / f"{args.protocol}-{time.strftime('%Y%m%d-%H%M%S')}"
    options = parse_options(args.param)
    record = run_protocol_locally(
        Path(args.bank), [Path(p) for p in args.provider], args.protocol, options, out_dir,
        align=args.align, split=args.split, split_key=Path(args.split_key) if args.split_key else None,
        insecure_tfp=args.insecure_tfp, insecure_cleartext=args.insecure_cleartext,
        emulate=(args.emulate_rtt_ms, args.emulate_mbit), connect_timeout=args.connect_timeout, quiet=args.quiet,
        save_models=Path(args.save_models) if args.save_models else None, features=args.features,
        release=args.release, groups=args.groups, release_label=args.release_label, importance=args.importance,
    )  # fmt: skip
    print(f"{result_line(record)}  ->  {out_dir / 'run.json'}")
    for warning in alignment_summary(record.parties)[1]:
        print(warning, file=sys.stderr)
    return 0


def cmd_protocols(args: argparse.Namespace) -> int:
    from mpc_fl.protocols import REGISTRY, describe

    names = args.names or sorted(REGISTRY)
    print("\n\n".join(describe(n) for n in names))
    print("\nSet any of these with --param key=value.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mpc_fl.app.demo import run_demo

    run_demo(Path(args.out_dir), n_bank=args.rows, quick=args.quick, quiet=args.quiet)
    return 0


FEATURES_HELP = (
    "all: every party's features; providers: a prospect model (the bank gives its labels only), "
    "which can score the platform's own SMEs with `mpc-fl shortlist`"
)
DROP_KNOWN_HELP = (
    "provider only: leave out prospects the model was trained on (already the bank's customers) "
    "instead of refusing the file"
)
REVEAL_HELP = (
    "both parties must say so: the platform also gets every prospect's score (the bank's model "
    "evaluated on its rows, enough to fit a copy of the model on its own features); default: "
    "only which prospects are on the list"
)


def _add_selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="bank: the K best prospects")
    p.add_argument(
        "--threshold", type=float, default=None, metavar="P",
        help="bank: every prospect whose take-up probability is at least P (kept secret from the platform)",
    )  # fmt: skip
    p.add_argument("--reveal-scores", action="store_true", help=REVEAL_HELP)


SCORECARD_HELP = (
    "bank only: add scorecard points to the scores, e.g. pdo=20,base=600,odds=50,higher=y1 (every pdo "
    "points double the odds of the outcome `higher` names; the base score at the base odds)"
)


def _add_release_args(p: argparse.ArgumentParser) -> None:
    from mpc_fl.models.reasons import RELEASES

    p.add_argument(
        "--release", default="none", choices=RELEASES,
        help="provider: what its model part releases of its features as reason codes: each by name, named "
        "groups (--groups), or none (one aggregate, named by --release-label)",
    )  # fmt: skip
    p.add_argument(
        "--groups",
        default=None,
        metavar="JSON",
        help='provider, --release group: {"group name": ["feature", ...]}',
    )
    p.add_argument("--release-label", default="partner data", help="provider: its data's name in a reason")
    p.add_argument(
        "--importance", action="store_true",
        help="report feature importance: each party its own features', the bank a provider's at its --release "
        "level (every party must say so)",
    )  # fmt: skip


def _add_reason_args(p: argparse.ArgumentParser) -> None:
    from mpc_fl.models.reasons import ADVERSE

    p.add_argument(
        "--reasons", type=int, default=0, metavar="R",
        help="the top R reasons per application (every party says the same R; 0: none)",
    )  # fmt: skip
    p.add_argument(
        "--adverse",
        default="y1",
        choices=ADVERSE,
        help="the outcome the reasons argue for (y1: e.g. default)",
    )


JOB_HELP = "run the job in this file (what a local run hands each process); the other flags are ignored"
PARAM_HELP = "a protocol parameter, repeatable; `mpc-fl protocols NAME` lists them with their defaults"


def build_parser() -> argparse.ArgumentParser:
    from mpc_fl.app.jobs import FEATURES
    from mpc_fl.data.split import SPLIT_HELP, SPLIT_KEY_HELP, SPLITS
    from mpc_fl.protocols import REGISTRY
    from mpc_fl.psi.align import ALIGN_HELP, ALIGNMENTS

    protocol_help = f"{', '.join(REGISTRY)} (`mpc-fl protocols` describes them)"

    parser = argparse.ArgumentParser(prog="mpc-fl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    k = sub.add_parser("keygen", help="make this member's key pair (once per member)")
    k.add_argument("--role", required=True, help="bank, provider, provider2, ..., dealer")
    k.add_argument("--out-dir", default="keys")
    k.set_defaults(func=cmd_keygen)

    f = sub.add_parser("federation", help="write the federation file from the members' certificates")
    f.add_argument(
        "members", nargs="+", metavar="ROLE=HOST:PORT", help="in rank order: bank, providers, dealer"
    )
    f.add_argument("--certs", default="keys", help="folder with each member's <role>.crt")
    f.add_argument("--out", default="federation.toml")
    f.set_defaults(func=cmd_federation)

    pr = sub.add_parser("protocols", help="list every protocol with its parameters, defaults and help")
    pr.add_argument("names", nargs="*", help="only these protocols")
    pr.set_defaults(func=cmd_protocols)

    p = sub.add_parser("party", help="run one party (reads only its own file and key)")
    p.add_argument("--job", default=None, metavar="FILE", help=JOB_HELP)
    p.add_argument("--role", help="bank, provider, provider2, ...")
    p.add_argument("--data", help="this party's CSV file")
    p.add_argument("--id-col", default="id")
    p.add_argument("--protocol", default="ss_lr", help=protocol_help)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help=PARAM_HELP)
    p.add_argument("--align", default="psi", choices=ALIGNMENTS, help=ALIGN_HELP)
    p.add_argument("--split", default="random", choices=SPLITS, help=SPLIT_HELP)
    p.add_argument("--split-key", default=None, metavar="FILE", help=SPLIT_KEY_HELP)
    p.add_argument("--out", default=None, help="write this party's report (JSON) here")
    p.add_argument("--keep-scores", action="store_true")
    p.add_argument(
        "--save-model", default=None, metavar="FILE", help="write this party's part of the trained model"
    )
    p.add_argument(
        "--insecure-tfp",
        action="store_true",
        help="DEBUG ONLY: no dealer; CrypTen's trusted-first-party mode lets the bank see everything",
    )
    p.add_argument("--features", default="all", choices=FEATURES, help=FEATURES_HELP)
    _add_release_args(p)
    _add_member_args(p)
    p.set_defaults(func=cmd_party, build_job=_train_job)

    d = sub.add_parser("dealer", help="run the Beaver-triple dealer (CrypTen TTP)")
    d.add_argument("--job", default=None, metavar="FILE", help=JOB_HELP)
    d.add_argument(
        "--forever", action="store_true", help="for a scoring service: join again after every session"
    )
    _add_member_args(d)
    d.set_defaults(func=cmd_dealer, build_job=_dealer_job)

    r = sub.add_parser("run", help="run every party locally as separate processes (fresh keys per run)")
    r.add_argument("--bank", required=True)
    r.add_argument("--provider", action="append", required=True, help="repeat for several providers")
    r.add_argument("--protocol", default="ss_lr", help=protocol_help)
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help=PARAM_HELP)
    r.add_argument("--align", default="psi", choices=ALIGNMENTS, help=ALIGN_HELP)
    r.add_argument("--split", default="random", choices=SPLITS, help=SPLIT_HELP)
    r.add_argument("--split-key", default=None, metavar="FILE", help=SPLIT_KEY_HELP)
    r.add_argument("--out-dir", default="out/runs")
    r.add_argument(
        "--save-models", default=None, metavar="DIR", help="each party writes DIR/<role>.model.npz"
    )
    r.add_argument("--insecure-tfp", action="store_true", help="DEBUG ONLY (see party --help)")
    r.add_argument("--features", default="all", choices=FEATURES, help=FEATURES_HELP)
    _add_release_args(r)
    _add_link_args(r)
    _add_output_args(r)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("score-party", help="score a new file with this party's part of a saved model")
    s.add_argument("--job", default=None, metavar="FILE", help=JOB_HELP)
    s.add_argument("--role")
    s.add_argument("--model", metavar="FILE", help="this party's part (from --save-model)")
    s.add_argument("--data", help="this party's CSV of customers to score")
    s.add_argument("--id-col", default="id")
    s.add_argument(
        "--label-col", default="y", help="bank only, optional: labels of the scored rows, for metrics"
    )
    s.add_argument("--align", default="psi", choices=ALIGNMENTS, help=ALIGN_HELP)
    s.add_argument("--out", default=None, help="write this party's report (JSON) here")
    s.add_argument("--scores", default=None, metavar="FILE", help="bank only: write id,score CSV here")
    s.add_argument("--scorecard", default=None, metavar="SPEC", help=SCORECARD_HELP)
    _add_reason_args(s)
    _add_member_args(s)
    s.set_defaults(func=cmd_score_party, build_job=_score_job)

    sc = sub.add_parser(
        "score", help="score new files locally with saved model parts (every party a process)"
    )
    sc.add_argument(
        "--models", required=True, metavar="DIR", help="folder of <role>.model.npz (from run --save-models)"
    )
    sc.add_argument("--bank", required=True)
    sc.add_argument("--provider", action="append", required=True)
    sc.add_argument("--align", default="psi", choices=ALIGNMENTS, help=ALIGN_HELP)
    sc.add_argument("--out-dir", default="out/scores")
    sc.add_argument("--scorecard", default=None, metavar="SPEC", help=SCORECARD_HELP)
    _add_reason_args(sc)
    _add_link_args(sc)
    _add_output_args(sc)
    sc.set_defaults(func=cmd_score)

    sl = sub.add_parser(
        "shortlist-party",
        help="score the platform's prospects with a prospect model; the platform gets the list",
    )
    sl.add_argument("--job", default=None, metavar="FILE", help=JOB_HELP)
    sl.add_argument("--role")
    sl.add_argument(
        "--model", metavar="FILE", help="this party's part of a prospect model (--features providers)"
    )
    sl.add_argument("--data", help="provider only: its CSV of prospects (customers the bank does not have)")
    sl.add_argument("--id-col", default="id")
    _add_selection_args(sl)
    sl.add_argument("--drop-known", action="store_true", help=DROP_KNOWN_HELP)
    sl.add_argument(
        "--shortlist", default=None, metavar="FILE", help="provider only: write the list (id CSV) here"
    )
    sl.add_argument("--out", default=None, help="write this party's report (JSON) here")
    _add_member_args(sl)
    sl.set_defaults(func=cmd_shortlist_party, build_job=_shortlist_job)

    sll = sub.add_parser(
        "shortlist", help="the shortlist with both parties run locally (every party a process)"
    )
    sll.add_argument(
        "--models", required=True, metavar="DIR", help="folder of a prospect model's <role>.model.npz"
    )
    sll.add_argument("--prospects", required=True, help="the platform's CSV of prospects")
    sll.add_argument("--id-col", default="id")
    _add_selection_args(sll)
    sll.add_argument("--drop-known", action="store_true", help=DROP_KNOWN_HELP)
    sll.add_argument("--out-dir", default="out/shortlists")
    _add_link_args(sll)
    _add_output_args(sll)
    sll.set_defaults(func=cmd_shortlist)

    at = sub.add_parser(
        "attribute-party", help="which referred SMEs took up a product (a PSI of two id lists)"
    )
    at.add_argument("--job", default=None, metavar="FILE", help=JOB_HELP)
    at.add_argument("--role")
    at.add_argument("--data", help="provider: the SMEs it referred; bank: its product take-ups (id CSV)")
    at.add_argument("--id-col", default="id")
    at.add_argument(
        "--align", default="psi", choices=[a for a in ALIGNMENTS if a != "sorted"], help=ALIGN_HELP
    )
    at.add_argument("--points-per-takeup", type=int, default=0, help="provider only: reward points per match")
    at.add_argument("--matches", default=None, metavar="FILE", help="write the matched ids (CSV) here")
    at.add_argument("--out", default=None, help="write this party's report (JSON) here")
    _add_member_args(at)
    at.set_defaults(func=cmd_attribute_party, build_job=_attribute_job)

    atl = sub.add_parser("attribute", help="the attribution with both parties run locally")
    atl.add_argument("--referred", required=True, help="the platform's CSV of referred SMEs")
    atl.add_argument("--takeups", required=True, help="the bank's CSV of product take-ups")
    atl.add_argument("--id-col", default="id")
    atl.add_argument(
        "--align", default="psi", choices=[a for a in ALIGNMENTS if a != "sorted"], help=ALIGN_HELP
    )
    atl.add_argument("--points-per-takeup", type=int, default=0, help="reward points per referred take-up")
    atl.add_argument("--out-dir", default="out/attributions")
    _add_link_args(atl)
    _add_output_args(atl)
    atl.set_defaults(func=cmd_attribute)

    sv = sub.add_parser("serve", help="scoring service: keep the links open and score applications by id")
    sv.add_argument("--role", required=True)
    sv.add_argument("--model", required=True, metavar="FILE", help="this party's part of the saved model")
    sv.add_argument("--features", required=True, metavar="CSV_OR_SQLITE", help="this party's features by id")
    sv.add_argument("--table", default="features", help="SQLite table holding the features")
    sv.add_argument("--id-col", default="id")
    sv.add_argument(
        "--http", default=None, metavar="[HOST]:PORT",
        help="bank only: serve POST /score, GET /health and GET /stability here (HOST defaults to 127.0.0.1)",
    )  # fmt: skip
    sv.add_argument(
        "--stability-window", type=int, default=1000, metavar="ROWS",
        help="drift monitor: the population stability index of this party's features (the bank's also of "
        "the score) over the last ROWS scored, at GET /stability and as a warning in the log past 0.25",
    )  # fmt: skip
    sv.add_argument(
        "--http-token-file", default=None, metavar="FILE",
        help="bank only: the endpoint's bearer token (created 0600 on first use; default: bank.score-token beside --key)",
    )  # fmt: skip
    sv.add_argument(
        "--http-certificate", default=None, metavar="PEM",
        help="bank only: serve HTTPS with this certificate chain (required off loopback)",
    )  # fmt: skip
    sv.add_argument("--http-certificate-key", default=None, metavar="PEM", help="bank only: its private key")
    sv.add_argument(
        "--http-no-auth", action="store_true",
        help="bank only: no bearer token (refused unless HOST is a loopback address)",
    )  # fmt: skip
    sv.add_argument(
        "--decoys", type=int, default=DEFAULT_DECOYS, metavar="K",
        help="bank only: send every applicant within a fixed set of K+1..2K+1 of the bank's customers, so the "
        f"provider sees the same set whoever of them applied (default {DEFAULT_DECOYS})",
    )  # fmt: skip
    sv.add_argument(
        "--decoys-policy", default="refuse", choices=DECOY_POLICIES,
        help="bank only: for an applicant that cannot be hidden yet (new since the sets were built), "
        "refuse it or score it with a warning",
    )  # fmt: skip
    sv.add_argument(
        "--decoy-sets", default=None, metavar="FILE",
        help="bank only: its anonymity sets (secret; default: bank.anonymity-sets.json beside --key)",
    )  # fmt: skip
    _add_reason_args(sv)
    _add_member_args(sv)
    sv.set_defaults(func=cmd_serve)

    m = sub.add_parser("demo", help="the SME scenario end to end on synthetic data")
    m.add_argument("--rows", type=int, default=20000, help="bank customers")
    m.add_argument("--out-dir", default="reports/demo")
    m.add_argument("--quick", action="store_true", help="fewer iterations and trees (a smoke run)")
    _add_output_args(m)
    m.set_defaults(func=cmd_demo)
    return parser


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _who(args: argparse.Namespace) -> str:
    return getattr(args, "role", None) or ("dealer" if args.command == "dealer" else args.command)


def _setup_logging(args: argparse.Namespace) -> Path | None:
    """Warnings as single lines on stderr; everything, tracebacks included, in ``--log`` if given."""
    who = _who(args)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(logging.WARNING)
    to_stderr.setFormatter(logging.Formatter(f"mpc-fl {who}: warning: %(message)s"))
    root.addHandler(to_stderr)
    path = Path(args.log) if getattr(args, "log", None) else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(path)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(to_file)
    return path


def _user_errors() -> tuple[type[BaseException], ...]:
    from mpc_fl.data.errors import DataError
    from mpc_fl.runtime.errors import PartyConnectionError, ProtocolMismatchError
    from mpc_fl.runtime.local import PartyFailed

    return (DataError, PartyConnectionError, ProtocolMismatchError, PartyFailed, ValueError, OSError)


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()  # a crash in native code (PSI library, torch) leaves its Python stack in the log
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "build_job", None):  # a party's job: built and validated once, before anything else
            args.job_ = _job(args, args.build_job)
    except Exception as err:  # noqa: BLE001 - a bad job ends in one line, like any failure
        _setup_logging(args)
        _report(args, err, None)
        return EXIT_USER_ERROR if isinstance(err, _user_errors()) else EXIT_INTERNAL_ERROR
    log_file = _setup_logging(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - every failure ends in one line and a non-zero exit
        if _REPORTED not in getattr(err, "__notes__", ()):
            _report(args, err, log_file)
        return EXIT_USER_ERROR if isinstance(err, _user_errors()) else EXIT_INTERNAL_ERROR


def _report(args: argparse.Namespace, err: BaseException, log_file: Path | None) -> None:
    """The one line a failure prints (an internal error's traceback goes to the log)."""
    details = "".join(traceback.format_exception(err))
    user = isinstance(err, _user_errors())
    if log_file is None and not user:
        fd, name = tempfile.mkstemp(prefix=f"mpc-fl-{_who(args)}-", suffix=".log")
        log_file = Path(name)
        os.close(fd)
        log_file.write_text(details)
    else:
        log.debug("failed:\n%s", details)
    where = f" (details in {log_file})" if log_file is not None and not user else ""
    kind = "error" if user else f"internal error: {type(err).__name__}"
    print(f"mpc-fl {_who(args)}: {kind}: {_one_line(err)}{where}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
