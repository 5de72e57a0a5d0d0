"""Command line: ``mpc-fl keygen``, ``federation``, ``protocols``, ``party``, ``dealer``, ``run``, ``demo``.

Every process, the dealer included, exits with 0 only when its run succeeded. A failure
prints one line on stderr (exit 2 for what a user can fix: input, federation, a peer that
is missing or stopped; exit 1 for an internal error, whose traceback goes to the log file).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mpc_fl.serving.decoys import DECOY_POLICIES, DEFAULT_DECOYS

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


def _federation(args: argparse.Namespace):  # noqa: ANN202 - a Federation
    from mpc_fl.runtime.federation import load_federation

    return load_federation(
        Path(args.federation),
        connect_timeout_s=args.connect_timeout,
        insecure_cleartext=args.insecure_cleartext,
        emulated_rtt_ms=args.emulate_rtt_ms,
        emulated_mbit=args.emulate_mbit,
    )


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
    p.add_argument(
        "--federation", required=True, help="the federation file (members, addresses, certificates)"
    )
    p.add_argument("--key", required=True, help="this member's key file (from `mpc-fl keygen`)")
    p.add_argument(
        "--listen", default=None, metavar="HOST:PORT", help="listen here instead of the federation address"
    )
    _add_link_args(p)
    _add_output_args(p)


@contextlib.contextmanager
def _peers_told_on_failure(args: argparse.Namespace, role: str, dealer: bool) -> Iterator[None]:
    """A party whose own input is bad still joins long enough to tell every member why it stops.

    Without this, the others waited out their connect timeout and then named the wrong member.
    Its own files are checked first; the federation file is read only to tell the others (if it
    is bad too, there is nobody to tell, and the first error stands).
    """
    try:
        yield
    except Exception as err:
        from mpc_fl.runtime.session import one_line, tell_peers_of_failure

        # the line comes now; telling the others takes at most TELL_PEERS_S
        _report(args, err, Path(args.log) if args.log else None)
        err.add_note(_REPORTED)
        try:
            fed = _federation(args)
        except Exception:  # noqa: BLE001 - nobody can be told; the input's error is what the user sees
            raise err from None
        if role in fed.roles:
            reason = f"{role}: {one_line(err)}"
            tell_peers_of_failure(fed, role, Path(args.key), reason, dealer=dealer, within_s=TELL_PEERS_S)
        raise


#: How long a party whose input is bad waits for the other members to be ready to hear why.
TELL_PEERS_S = 10.0
_REPORTED = "mpc_fl: already reported"


def _needs_dealer(protocol: str, insecure_tfp: bool = False) -> bool:
    """Whether this protocol's run has a dealer (an unknown protocol: assume it may)."""
    from mpc_fl.protocols import REGISTRY, uses_crypten

    return protocol not in REGISTRY or (uses_crypten(protocol) and not insecure_tfp)


def cmd_party(args: argparse.Namespace) -> int:
    from mpc_fl.protocols import check_options, full_options, uses_crypten

    role = args.role
    with _peers_told_on_failure(args, role, _needs_dealer(args.protocol, args.insecure_tfp)):
        # this party's own file is checked before anything slow is imported or any peer is contacted
        from mpc_fl.data.party_table import load_party_csv

        table = load_party_csv(args.data, role="bank" if role == "bank" else "provider", id_col=args.id_col)
        options = check_options(args.protocol, parse_options(args.param))
        split_key = None
        if args.split_key:
            if role != "bank":
                raise ValueError("--split-key is the bank's secret; providers do not take it")
            from mpc_fl.data.split import load_split_key

            split_key = load_split_key(Path(args.split_key))
    fed = _federation(args)
    if role not in fed.roles:
        raise ValueError(f"--role {role!r} is not a computing party of the federation {fed.roles}")
    crypten = uses_crypten(args.protocol)
    hello = {
        "protocol": args.protocol,
        "params": full_options(args.protocol, options),
        "alignment": args.align,
        "split": args.split,
    }
    from mpc_fl.pipeline import run_party
    from mpc_fl.runtime.session import connect, process_age_s

    with connect(
        fed, role, Path(args.key), uses_crypten=crypten, listen=_listen(args), hello=hello, quiet=args.quiet,
        dealer=crypten and not args.insecure_tfp,
    ) as session:  # fmt: skip
        report = run_party(
            session, table, args.protocol, options,
            alignment=args.align, split=args.split, split_key=split_key, keep_scores=args.keep_scores,
            save_model=Path(args.save_model) if args.save_model else None,
        )  # fmt: skip
        report.ready_s = session.ready_s
    report.wall_s = process_age_s()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report.to_dict(), indent=1, default=str))
    _print_party_result(report)
    return 0


def _print_party_result(report) -> None:  # noqa: ANN001
    from mpc_fl.runs import DROPPED_WARNING

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
    from mpc_fl.data.party_table import load_party_csv

    role = args.role
    with _peers_told_on_failure(args, role, dealer=True):
        kind = "bank-scoring" if role == "bank" else "provider"  # labels are optional in a file to score
        table = load_party_csv(args.data, role=kind, id_col=args.id_col, label_col=args.label_col)
        from mpc_fl.pipeline import load_model

        model = load_model(Path(args.model), role)  # refuses another role's part or another version
    fed = _federation(args)
    if role not in fed.roles:
        raise ValueError(f"--role {role!r} is not a computing party of the federation {fed.roles}")
    from mpc_fl.pipeline import score_party
    from mpc_fl.protocols import uses_crypten
    from mpc_fl.runtime.session import connect, process_age_s

    hello = {
        "mode": "score",
        "protocol": model.part.protocol,
        "model": model.part.fingerprint,
        "alignment": args.align,
    }
    crypten = uses_crypten(model.part.protocol)
    with connect(
        fed, role, Path(args.key), uses_crypten=crypten, listen=_listen(args), hello=hello, quiet=args.quiet
    ) as session:
        report = score_party(session, table, model, alignment=args.align)
    report.wall_s = process_age_s()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report.to_dict(), indent=1, default=str))
    if report.scores is not None and args.scores:
        _write_scores(Path(args.scores), report.ids, report.scores)
    unscored = report.n_input - report.n_aligned
    print(
        f"[{role}] {report.protocol} model {report.model[:12]}: scored {report.n_aligned:,} customers "
        f"({unscored:,} of this party's {report.n_input:,} rows are not at every party) in {report.score_s:.2f} s"
        + (f" -> {args.scores}" if report.scores is not None and args.scores else "")
    )
    return 0


def _write_scores(path: Path, ids: list[str], scores: list[float]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "score"])
        w.writerows((i, f"{s:.6f}") for i, s in zip(ids, scores, strict=True))


def cmd_score(args: argparse.Namespace) -> int:
    from mpc_fl.runs import score_locally

    out_dir = Path(args.out_dir) / f"score-{time.strftime('%Y%m%d-%H%M%S')}"
    record = score_locally(
        Path(args.bank), [Path(p) for p in args.provider], Path(args.models), out_dir,
        align=args.align, insecure_cleartext=args.insecure_cleartext, connect_timeout=args.connect_timeout,
        emulate=(args.emulate_rtt_ms, args.emulate_mbit), quiet=args.quiet,
    )  # fmt: skip
    (out_dir / "score.json").write_text(json.dumps(record, indent=1, default=str))
    print(
        f"{record['protocol']} model {record['model'][:12]}: scored {record['n_aligned']:,} customers in "
        f"{record['score_s']:.2f} s (wall {record['wall_s']:.1f} s) -> {record['scores_file']}"
    )
    return 0


def _feature_store(args: argparse.Namespace, model_path: Path, role: str):  # noqa: ANN202 - a FeatureStore
    """The party's own features by id: an SQLite table, or its CSV loaded into a temporary one."""
    import tempfile

    from mpc_fl.models.store import load_part
    from mpc_fl.serving import FeatureStore

    source = Path(args.features)
    if source.suffix.lower() == ".csv":
        db = Path(tempfile.mkdtemp(prefix=f"mpc-fl-{role}-")) / "features.sqlite"
        return FeatureStore.from_csv(source, db, id_col=args.id_col)
    columns = load_part(model_path, role=role).feature_names  # only the model's columns are read
    return FeatureStore(source, table=args.table, id_col=args.id_col, columns=columns)


def _endpoint_settings(args: argparse.Namespace):  # noqa: ANN202 - an EndpointSettings
    """``--http [HOST]:PORT`` and its token, checked before anything connects."""
    from mpc_fl.serving import EndpointSettings, token_from_file

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

    from mpc_fl.serving import (
        SERVICE_OP_TIMEOUT_S,
        BankService,
        DecoySettings,
        ServiceSettings,
        serve_http,
        serve_provider,
    )

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
        settings = ServiceSettings(fed, role, Path(args.key), model_path, store, _listen(args), args.quiet)
        print(f"[{role}] scoring service: answering the bank's queries (Ctrl-C to stop)", flush=True)
        serve_provider(settings)
        return 0
    settings = ServiceSettings(fed, role, Path(args.key), model_path, store, _listen(args), args.quiet)
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

    from mpc_fl.runtime.session import serve_dealer
    from mpc_fl.serving import SERVICE_OP_TIMEOUT_S

    fed = _federation(args)
    if args.forever:  # a scoring service's dealer idles between queries and joins again after each session
        fed = dataclasses.replace(fed, op_timeout_s=SERVICE_OP_TIMEOUT_S)
    served = serve_dealer(fed, Path(args.key), listen=_listen(args), forever=args.forever)
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
    from mpc_fl.runs import alignment_summary, result_line, run_protocol_locally

    out_dir = Path(args.out_dir) / f"{args.protocol}-{time.strftime('%Y%m%d-%H%M%S')}"
    options = parse_options(args.param)
    record = run_protocol_locally(
        Path(args.bank), [Path(p) for p in args.provider], args.protocol, options, out_dir,
        align=args.align, split=args.split, split_key=Path(args.split_key) if args.split_key else None,
        insecure_tfp=args.insecure_tfp, insecure_cleartext=args.insecure_cleartext,
        emulate=(args.emulate_rtt_ms, args.emulate_mbit), connect_timeout=args.connect_timeout, quiet=args.quiet,
        save_models=Path(args.save_models) if args.save_models else None,
    )  # fmt: skip
    print(
        result_line(
            args.protocol,
            record["metrics"],
            record["parties"],
            record["fit_s"],
            record["wall_s"],
            record["traffic"]["total"],
        )  # fmt: skip
        + f"  ->  {out_dir / 'run.json'}"
    )
    for warning in alignment_summary(record["parties"])[1]:
        print(warning, file=sys.stderr)
    return 0


def cmd_protocols(args: argparse.Namespace) -> int:
    from mpc_fl.protocols import REGISTRY, describe

    names = args.names or sorted(REGISTRY)
    print("\n\n".join(describe(n) for n in names))
    print("\nSet any of these with --param key=value.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mpc_fl.demo import run_demo

    run_demo(Path(args.out_dir), n_bank=args.rows, quick=args.quick, quiet=args.quiet)
    return 0


PROTOCOL_HELP = (
    "plain_lr, plain_gbdt, ss_lr, ss_gbdt, paillier_lr or secureboost (`mpc-fl protocols` describes them)"
)
#: Same as mpc_fl.pipeline.ALIGNMENTS (kept here so --help needs no heavy import).
ALIGN_CHOICES = ("psi", "ecdh", "kkrt", "sorted")
ALIGN_HELP = (
    "how the parties find their common customers: psi = RR22 OT-based PSI (default, fastest), "
    "ecdh = ECDH-PSI, kkrt = KKRT OT-based PSI (all three reveal only the set sizes and the "
    "intersection); sorted = the files already hold the same ids (checked by hash)"
)
PARAM_HELP = "a protocol parameter, repeatable; `mpc-fl protocols NAME` lists them with their defaults"


def build_parser() -> argparse.ArgumentParser:
    from mpc_fl.data.split import SPLIT_HELP, SPLIT_KEY_HELP, SPLITS

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
    p.add_argument("--role", required=True, help="bank, provider, provider2, ...")
    p.add_argument("--data", required=True, help="this party's CSV file")
    p.add_argument("--id-col", default="id")
    p.add_argument("--protocol", default="ss_lr", help=PROTOCOL_HELP)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help=PARAM_HELP)
    p.add_argument("--align", default="psi", choices=ALIGN_CHOICES, help=ALIGN_HELP)
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
    _add_member_args(p)
    p.set_defaults(func=cmd_party)

    d = sub.add_parser("dealer", help="run the Beaver-triple dealer (CrypTen TTP)")
    d.add_argument(
        "--forever", action="store_true", help="for a scoring service: join again after every session"
    )
    _add_member_args(d)
    d.set_defaults(func=cmd_dealer)

    r = sub.add_parser("run", help="run every party locally as separate processes (fresh keys per run)")
    r.add_argument("--bank", required=True)
    r.add_argument("--provider", action="append", required=True, help="repeat for several providers")
    r.add_argument("--protocol", default="ss_lr", help=PROTOCOL_HELP)
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help=PARAM_HELP)
    r.add_argument("--align", default="psi", choices=ALIGN_CHOICES, help=ALIGN_HELP)
    r.add_argument("--split", default="random", choices=SPLITS, help=SPLIT_HELP)
    r.add_argument("--split-key", default=None, metavar="FILE", help=SPLIT_KEY_HELP)
    r.add_argument("--out-dir", default="out/runs")
    r.add_argument(
        "--save-models", default=None, metavar="DIR", help="each party writes DIR/<role>.model.npz"
    )
    r.add_argument("--insecure-tfp", action="store_true", help="DEBUG ONLY (see party --help)")
    _add_link_args(r)
    _add_output_args(r)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("score-party", help="score a new file with this party's part of a saved model")
    s.add_argument("--role", required=True)
    s.add_argument("--model", required=True, metavar="FILE", help="this party's part (from --save-model)")
    s.add_argument("--data", required=True, help="this party's CSV of customers to score")
    s.add_argument("--id-col", default="id")
    s.add_argument(
        "--label-col", default="y", help="bank only, optional: labels of the scored rows, for metrics"
    )
    s.add_argument("--align", default="psi", choices=ALIGN_CHOICES, help=ALIGN_HELP)
    s.add_argument("--out", default=None, help="write this party's report (JSON) here")
    s.add_argument("--scores", default=None, metavar="FILE", help="bank only: write id,score CSV here")
    _add_member_args(s)
    s.set_defaults(func=cmd_score_party)

    sc = sub.add_parser(
        "score", help="score new files locally with saved model parts (every party a process)"
    )
    sc.add_argument(
        "--models", required=True, metavar="DIR", help="folder of <role>.model.npz (from run --save-models)"
    )
    sc.add_argument("--bank", required=True)
    sc.add_argument("--provider", action="append", required=True)
    sc.add_argument("--align", default="psi", choices=ALIGN_CHOICES, help=ALIGN_HELP)
    sc.add_argument("--out-dir", default="out/scores")
    _add_link_args(sc)
    _add_output_args(sc)
    sc.set_defaults(func=cmd_score)

    sv = sub.add_parser("serve", help="scoring service: keep the links open and score applications by id")
    sv.add_argument("--role", required=True)
    sv.add_argument("--model", required=True, metavar="FILE", help="this party's part of the saved model")
    sv.add_argument("--features", required=True, metavar="CSV_OR_SQLITE", help="this party's features by id")
    sv.add_argument("--table", default="features", help="SQLite table holding the features")
    sv.add_argument("--id-col", default="id")
    sv.add_argument(
        "--http", default=None, metavar="[HOST]:PORT",
        help="bank only: serve POST /score and GET /health here (HOST defaults to 127.0.0.1)",
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
