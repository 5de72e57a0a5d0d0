"""Command line: ``mpc-fl party`` (one party), ``dealer``, ``run`` (all parties locally), ``demo``.

Errors in the input or in the federation print one clear line and exit with code 2;
there are no tracebacks for things a user can fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mpc_fl.data.errors import DataError
from mpc_fl.runtime.local import PartyFailed
from mpc_fl.runtime.session import Federation, PartyConnectionError

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
    roles = tuple(r.strip() for r in args.parties.split(","))
    if roles[0] != "bank":
        raise ValueError("the first party must be the bank (the label holder, rank 0)")
    return Federation(
        roles=roles,
        dealer=not args.insecure_tfp,
        master_addr=args.master_addr,
        master_port=args.master_port,
        connect_timeout_s=args.connect_timeout,
    )


def _add_federation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parties", default="bank,provider", help="computing parties in rank order, bank first")
    p.add_argument("--master-addr", default=os.environ.get("MASTER_ADDR", "127.0.0.1"))
    p.add_argument("--master-port", type=int, default=int(os.environ.get("MASTER_PORT", "29500")))
    p.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to wait for every party")
    p.add_argument(
        "--insecure-tfp",
        action="store_true",
        help="DEBUG ONLY: no dealer; CrypTen's trusted-first-party mode lets the bank see everything",
    )


def cmd_party(args: argparse.Namespace) -> int:
    from mpc_fl.data.party_table import load_party_csv
    from mpc_fl.pipeline import run_party
    from mpc_fl.protocols import protocol_class
    from mpc_fl.runtime.session import connect

    fed = _federation(args)
    role = args.role
    if role not in fed.roles:
        raise ValueError(f"--role {role!r} is not one of --parties {fed.roles}")
    if args.rank is not None and args.rank != fed.rank_of(role):
        raise ValueError(
            f"--rank {args.rank} does not match {role!r}'s position in --parties ({fed.rank_of(role)})"
        )
    table = load_party_csv(args.data, role="bank" if role == "bank" else "provider", id_col=args.id_col)
    options = parse_options(args.param)
    uses_crypten = protocol_class(args.protocol).uses_crypten
    if not uses_crypten:
        fed = dataclasses.replace(fed, dealer=False)
    with connect(fed, role, uses_crypten=uses_crypten) as session:
        report = run_party(
            session, table, args.protocol, options, alignment=args.align, keep_scores=args.keep_scores
        )
    out = json.dumps(report.to_dict(), indent=1, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(out)
    if report.metrics:
        print(f"[{role}] {args.protocol}: " + ", ".join(f"{k}={v:.4f}" for k, v in report.metrics.items()))
    return 0


def cmd_dealer(args: argparse.Namespace) -> int:
    from mpc_fl.runtime.session import serve_dealer

    serve_dealer(_federation(args))
    return 0


def run_protocol_locally(
    bank: Path,
    providers: list[Path],
    protocol: str,
    options: dict[str, Any],
    out_dir: Path,
    *,
    align: str = "psi",
    insecure_tfp: bool = False,
    connect_timeout: float = 60.0,
    keep_scores: bool = False,
) -> dict[str, Any]:
    """Start every party as its own ``mpc-fl party`` process; return the merged run record."""
    from mpc_fl.protocols import protocol_class
    from mpc_fl.runtime.launch import launch
    from mpc_fl.runtime.ledger import Ledger
    from mpc_fl.runtime.local import free_port
    from mpc_fl.runtime.provenance import provenance

    roles = ["bank"] + (
        ["provider"] if len(providers) == 1 else [f"provider{i + 1}" for i in range(len(providers))]
    )
    files = dict(zip(roles, [bank, *providers], strict=True))
    port = free_port()
    common = [
        "--parties", ",".join(roles), "--master-addr", "127.0.0.1", "--master-port", str(port),
        "--connect-timeout", str(connect_timeout),
    ]  # fmt: skip
    if insecure_tfp:
        common.append("--insecure-tfp")
    params = [x for k, v in options.items() for x in ("--param", f"{k}={v}")]
    py = [sys.executable, "-m", "mpc_fl.cli"]
    commands = {
        r: [*py, "party", "--role", r, "--data", str(f), "--protocol", protocol, "--align", align,
            "--out", str(out_dir / f"{r}.json"), *common, *params, *(["--keep-scores"] if keep_scores else [])]
        for r, f in files.items()
    }  # fmt: skip
    if protocol_class(protocol).uses_crypten and not insecure_tfp:
        commands["dealer"] = [*py, "dealer", *common]
    t0 = time.perf_counter()
    launch(commands, out_dir / "logs", env={"PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    parties = {r: json.loads((out_dir / f"{r}.json").read_text()) for r in roles}
    bank_report = parties["bank"]
    return {
        "protocol": protocol,
        "params": bank_report["params"],
        "alignment": align,
        "dealer": "none (insecure TFP)" if insecure_tfp else "separate TTP process",
        "metrics": bank_report["metrics"],
        "n_aligned": bank_report["n_aligned"],
        "n_train": bank_report["n_train"],
        "fit_s": bank_report["fit_s"],
        "score_s": bank_report["score_s"],
        "wall_s": wall,
        "traffic": Ledger.merge([p["ledger"] for p in parties.values()]),
        "parties": parties,
        "provenance": provenance(),
    }


def cmd_run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir) / f"{args.protocol}-{time.strftime('%Y%m%d-%H%M%S')}"
    record = run_protocol_locally(
        Path(args.bank), [Path(p) for p in args.provider], args.protocol, parse_options(args.param), out_dir,
        align=args.align, insecure_tfp=args.insecure_tfp, connect_timeout=args.connect_timeout,
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
    parser = argparse.ArgumentParser(prog="mpc-fl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("party", help="run one party (reads only its own file)")
    p.add_argument("--role", required=True, help="bank, provider, provider2, ...")
    p.add_argument("--rank", type=int, default=None, help="optional check: must match the role's position")
    p.add_argument("--data", required=True, help="this party's CSV file")
    p.add_argument("--id-col", default="id")
    p.add_argument("--protocol", default="ss_lr")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--align", default="psi", choices=["psi", "sorted"])
    p.add_argument("--out", default=None, help="write this party's report (JSON) here")
    p.add_argument("--keep-scores", action="store_true")
    _add_federation_args(p)
    p.set_defaults(func=cmd_party)

    d = sub.add_parser("dealer", help="run the Beaver-triple dealer (CrypTen TTP)")
    _add_federation_args(d)
    d.set_defaults(func=cmd_dealer)

    r = sub.add_parser("run", help="run every party locally as separate processes")
    r.add_argument("--bank", required=True)
    r.add_argument("--provider", action="append", required=True)
    r.add_argument("--protocol", default="ss_lr")
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--align", default="psi", choices=["psi", "sorted"])
    r.add_argument("--out-dir", default="out/runs")
    r.add_argument("--connect-timeout", type=float, default=60.0)
    r.add_argument("--insecure-tfp", action="store_true", help="DEBUG ONLY (see party --help)")
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
    except (DataError, PartyConnectionError, PartyFailed, ValueError) as err:
        print(f"mpc-fl {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
