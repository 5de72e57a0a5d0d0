"""Command line: ``mpc-fl keygen``, ``federation``, ``party`` (one party), ``dealer``, ``run`` (all parties locally), ``demo``.

Errors in the input or in the federation print one clear line and exit with code 2;
there are no tracebacks for things a user can fix.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from mpc_fl.data.errors import DataError
from mpc_fl.runtime.errors import PartyConnectionError, ProtocolMismatchError
from mpc_fl.runtime.federation import Federation
from mpc_fl.runtime.local import PartyFailed

EXIT_USER_ERROR = 2


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


def _federation(args: argparse.Namespace) -> Federation:
    from mpc_fl.runtime.federation import load_federation

    return load_federation(
        Path(args.federation),
        connect_timeout_s=args.connect_timeout,
        insecure_cleartext=args.insecure_cleartext,
    )


def _listen(args: argparse.Namespace) -> tuple[str, int] | None:
    from mpc_fl.runtime.federation import parse_address

    return parse_address(args.listen) if args.listen else None


def _add_link_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--connect-timeout", type=float, default=60.0, help="seconds (from process start) to reach every peer"
    )
    p.add_argument(
        "--insecure-cleartext",
        action="store_true",
        help="DEBUG ONLY: plain TCP links, no authentication or encryption (anyone on the path sees everything)",
    )


def _add_member_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--federation", required=True, help="the federation file (members, addresses, certificates)"
    )
    p.add_argument("--key", required=True, help="this member's key file (from `mpc-fl keygen`)")
    p.add_argument(
        "--listen", default=None, metavar="HOST:PORT", help="listen here instead of the federation address"
    )
    _add_link_args(p)


def cmd_party(args: argparse.Namespace) -> int:
    from mpc_fl.data.party_table import load_party_csv
    from mpc_fl.data.split import load_split_key
    from mpc_fl.pipeline import run_party
    from mpc_fl.protocols import protocol_class
    from mpc_fl.runtime.session import connect

    fed = _federation(args)
    role = args.role
    if role not in fed.roles:
        raise ValueError(f"--role {role!r} is not a computing party of the federation {fed.roles}")
    table = load_party_csv(args.data, role="bank" if role == "bank" else "provider", id_col=args.id_col)
    options = parse_options(args.param)
    split_key = None
    if args.split_key:
        if role != "bank":
            raise ValueError("--split-key is the bank's secret; providers do not take it")
        split_key = load_split_key(Path(args.split_key))
    uses_crypten = protocol_class(args.protocol).uses_crypten
    if args.insecure_tfp or not uses_crypten:
        fed = fed.without_dealer()
    with connect(fed, role, Path(args.key), uses_crypten=uses_crypten, listen=_listen(args)) as session:
        report = run_party(
            session, table, args.protocol, options,
            alignment=args.align, split=args.split, split_key=split_key, keep_scores=args.keep_scores,
        )  # fmt: skip
    out = json.dumps(report.to_dict(), indent=1, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(out)
    if report.metrics:
        print(f"[{role}] {args.protocol}: " + ", ".join(f"{k}={v:.4f}" for k, v in report.metrics.items()))
    return 0


def cmd_dealer(args: argparse.Namespace) -> int:
    from mpc_fl.runtime.session import serve_dealer

    served = serve_dealer(_federation(args), Path(args.key), listen=_listen(args))
    print(f"[dealer] served {served} requests")
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
    connect_timeout: float = 60.0,
    keep_scores: bool = False,
) -> dict[str, Any]:
    """Start every party as its own ``mpc-fl party`` process over a fresh local federation; return the run record."""
    from mpc_fl.protocols import protocol_class
    from mpc_fl.runtime.launch import run_parties_locally

    party_args = ["--align", align, "--split", split]
    party_args += ["--keep-scores"] if keep_scores else []
    party_args += ["--insecure-tfp"] if insecure_tfp else []
    return run_parties_locally(
        bank, providers, protocol, options, out_dir,
        dealer=protocol_class(protocol).uses_crypten and not insecure_tfp,
        party_args=party_args, bank_args=["--split-key", str(split_key)] if split_key else [],
        connect_timeout=connect_timeout, insecure_cleartext=insecure_cleartext,
    )  # fmt: skip


def cmd_run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir) / f"{args.protocol}-{time.strftime('%Y%m%d-%H%M%S')}"
    record = run_protocol_locally(
        Path(args.bank), [Path(p) for p in args.provider], args.protocol, parse_options(args.param), out_dir,
        align=args.align, split=args.split, split_key=Path(args.split_key) if args.split_key else None,
        insecure_tfp=args.insecure_tfp,
        insecure_cleartext=args.insecure_cleartext, connect_timeout=args.connect_timeout,
    )  # fmt: skip
    (out_dir / "run.json").write_text(json.dumps(record, indent=1, default=str))
    m = record["metrics"]
    t = record["traffic"]["total"]
    print(
        f"{args.protocol}: AUC {m['auc']:.4f}  KS {m['ks']:.4f}  fit {record['fit_s']:.1f}s  "
        f"sent {t['bytes_sent'] / 1e6:.2f} MB in {t['rounds']} rounds  ->  {out_dir / 'run.json'}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mpc_fl.demo import run_demo

    run_demo(Path(args.out_dir), n_bank=args.rows, quick=args.quick)
    return 0


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

    p = sub.add_parser("party", help="run one party (reads only its own file and key)")
    p.add_argument("--role", required=True, help="bank, provider, provider2, ...")
    p.add_argument("--data", required=True, help="this party's CSV file")
    p.add_argument("--id-col", default="id")
    p.add_argument("--protocol", default="ss_lr")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--align", default="psi", choices=["psi", "sorted"])
    p.add_argument("--split", default="random", choices=SPLITS, help=SPLIT_HELP)
    p.add_argument("--split-key", default=None, metavar="FILE", help=SPLIT_KEY_HELP)
    p.add_argument("--out", default=None, help="write this party's report (JSON) here")
    p.add_argument("--keep-scores", action="store_true")
    p.add_argument(
        "--insecure-tfp",
        action="store_true",
        help="DEBUG ONLY: no dealer; CrypTen's trusted-first-party mode lets the bank see everything",
    )
    _add_member_args(p)
    p.set_defaults(func=cmd_party)

    d = sub.add_parser("dealer", help="run the Beaver-triple dealer (CrypTen TTP)")
    _add_member_args(d)
    d.set_defaults(func=cmd_dealer)

    r = sub.add_parser("run", help="run every party locally as separate processes (fresh keys per run)")
    r.add_argument("--bank", required=True)
    r.add_argument("--provider", action="append", required=True, help="repeat for several providers")
    r.add_argument("--protocol", default="ss_lr")
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--align", default="psi", choices=["psi", "sorted"])
    r.add_argument("--split", default="random", choices=SPLITS, help=SPLIT_HELP)
    r.add_argument("--split-key", default=None, metavar="FILE", help=SPLIT_KEY_HELP)
    r.add_argument("--out-dir", default="out/runs")
    r.add_argument("--insecure-tfp", action="store_true", help="DEBUG ONLY (see party --help)")
    _add_link_args(r)
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("demo", help="the SME scenario end to end on synthetic data")
    m.add_argument("--rows", type=int, default=20000, help="bank customers")
    m.add_argument("--out-dir", default="reports/demo")
    m.add_argument("--quick", action="store_true", help="fewer iterations and trees (a smoke run)")
    m.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, PartyConnectionError, ProtocolMismatchError, PartyFailed, ValueError) as err:
        print(f"mpc-fl {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
