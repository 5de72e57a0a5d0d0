"""Local runs: every party (and the dealer) as its own ``mpc-fl`` process, and what a run reports.

The CLI (``mpc-fl run``), the demo and the benchmarks all start runs here, over a fresh
local federation per run (:func:`mpc_fl.runtime.launch.run_parties_locally`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpc_fl.runtime.launch import provider_roles, run_parties_locally
from mpc_fl.runtime.ledger import Ledger
from mpc_fl.runtime.provenance import provenance
from mpc_fl.runtime.session import one_line

if TYPE_CHECKING:
    from mpc_fl.serving import DecoySettings

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
) -> dict[str, Any]:
    """Train and score with every party as its own ``mpc-fl party`` process over a fresh local federation.

    ``timeout_s``: the whole run's budget; past it every process is stopped and the run fails
    naming the ones still running.

    Returns the run record, also written to ``out_dir/run.json`` (``status`` ``ok``; a failed run
    leaves ``status`` ``failed`` and its one-line error there). ``save_models``: each party writes its part of the model to
    ``<save_models>/<role>.model.npz``. ``quiet=False`` relays the bank's progress lines.
    ``emulate``: (round-trip ms, Mbit/s) every link emulates (:class:`mpc_fl.runtime.mesh.LinkEmulator`).
    """
    from mpc_fl.protocols import check_options, uses_crypten

    check_options(protocol, options)  # a misspelt parameter fails here, before any process starts
    args = ["--protocol", protocol, "--align", align, "--split", split]
    args += [x for k, v in options.items() for x in ("--param", f"{k}={v}")]
    args += ["--keep-scores"] if keep_scores else []
    args += ["--insecure-tfp"] if insecure_tfp else []
    roles = ["bank", *provider_roles(len(providers))]
    role_args: dict[str, list[str]] = {r: [] for r in roles}
    if split_key:
        role_args["bank"] += ["--split-key", str(split_key)]
    if save_models:
        for r in roles:
            role_args[r] += ["--save-model", str(model_path(save_models, r))]
    dealer = uses_crypten(protocol) and not insecure_tfp
    try:
        parties, wall = run_parties_locally(
            bank, providers, out_dir, dealer=dealer, args=args, role_args=role_args,
            connect_timeout=connect_timeout, insecure_cleartext=insecure_cleartext, emulate=emulate,
            relay_progress=not quiet, timeout_s=timeout_s,
        )  # fmt: skip
    except Exception as err:
        if out_dir.exists():  # the folder says what happened, not just its logs
            failed = {"status": "failed", "error": one_line(err), "protocol": protocol, "params": options}
            (out_dir / "run.json").write_text(json.dumps(failed, indent=1, default=str))
        raise
    bank_report = parties["bank"]
    record = {
        "status": "ok",
        "protocol": protocol,
        "params": bank_report["params"],
        "alignment": bank_report.get("alignment"),
        "split": bank_report.get("split"),
        "dealer": "separate dealer process (CrypTen TTP)" if dealer else "none",
        "links": "cleartext (insecure)" if insecure_cleartext else "TLS 1.3, mutual authentication",
        "emulated_network": {"rtt_ms": emulate[0], "mbit": emulate[1]} if any(emulate) else None,
        "metrics": bank_report["metrics"],
        "run_info": bank_report.get("run_info", {}),
        "n_aligned": bank_report["n_aligned"],
        "n_train": bank_report["n_train"],
        "fit_s": bank_report["fit_s"],
        "score_s": bank_report["score_s"],
        "wall_s": wall,
        "models": {r: p.get("model") for r, p in parties.items()} if save_models else None,
        "traffic": Ledger.merge([p["ledger"] for p in parties.values()]),
        "parties": parties,
        "provenance": provenance(),
    }
    (out_dir / "run.json").write_text(json.dumps(record, indent=1, default=str))
    return record


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
) -> dict[str, Any]:
    """Score new files with saved parts, every party as its own ``mpc-fl score-party`` process."""
    from mpc_fl.models.store import load_part
    from mpc_fl.protocols import uses_crypten

    roles = ["bank", *provider_roles(len(providers))]
    part = load_part(model_path(models_dir, "bank"), role="bank")  # only its public header is used here
    role_args = {r: ["--model", str(model_path(models_dir, r))] for r in roles}
    role_args["bank"] += ["--scores", str(out_dir / "scores.csv")]
    dealer = uses_crypten(part.protocol)
    parties, wall = run_parties_locally(
        bank, providers, out_dir, dealer=dealer, subcommand="score-party", args=["--align", align],
        role_args=role_args, connect_timeout=connect_timeout, insecure_cleartext=insecure_cleartext,
        emulate=emulate, relay_progress=not quiet, timeout_s=timeout_s,
    )  # fmt: skip
    return {
        "protocol": part.protocol,
        "model": part.fingerprint,
        "n_aligned": parties["bank"]["n_aligned"],
        "score_s": parties["bank"]["score_s"],
        "wall_s": wall,
        "scores_file": str(out_dir / "scores.csv"),
        "traffic": Ledger.merge([p["ledger"] for p in parties.values()]),
        "parties": parties,
        "provenance": provenance(),
    }


def dropped_rows(report: dict) -> tuple[int, int]:
    """(rows in the party's file, rows alignment dropped) from a party's report."""
    return report["n_input"], report["n_input"] - report["n_aligned"]


def alignment_summary(parties: dict[str, dict]) -> tuple[str, list[str]]:
    """One clause on alignment for the result line, and a warning per party that lost most of its rows."""
    n_aligned = next(iter(parties.values()))["n_aligned"]
    parts, warnings = [], []
    for role, rep in parties.items():
        n_in, dropped = dropped_rows(rep)
        parts.append(f"{role} dropped {dropped:,} of {n_in:,}")
        if n_in and dropped / n_in > DROPPED_WARNING:
            warnings.append(
                f"warning: alignment dropped {dropped / n_in:.0%} of {role}'s rows ({dropped:,} of {n_in:,}): "
                f"check that the parties use the same customer ids"
            )
    return f"{n_aligned:,} customers aligned ({'; '.join(parts)})", warnings


def result_line(
    protocol: str, metrics: dict, parties: dict[str, dict], fit_s: float, wall_s: float, traffic: dict
) -> str:
    """The line a finished run prints: quality, alignment, time and traffic."""
    quality = f"AUC {metrics['auc']:.4f}  KS {metrics['ks']:.4f}" if metrics else "no scores at this party"
    aligned, _ = alignment_summary(parties)
    sent = traffic["bytes_sent"] / 1e6
    return (
        f"{protocol}: {quality} | {aligned} | fit {fit_s:.1f} s, wall {wall_s:.1f} s | "
        f"{sent:,.2f} MB sent in {traffic['rounds']:,} rounds"
    )


class LocalService:
    """A scoring service on this machine: provider and dealer services as processes, the bank's here.

    For the demo, tests and benchmarks; on real hosts each member runs ``mpc-fl serve`` (and the
    dealer ``mpc-fl dealer --forever``) itself. Fresh keys and ports per deployment.
    """

    def __init__(
        self, models_dir: Path, bank_csv: Path, provider_csv: Path, work_dir: Path, *,
        decoys: DecoySettings | None = None,
    ):  # fmt: skip
        import sys

        from mpc_fl.models.store import load_part
        from mpc_fl.protocols import uses_crypten
        from mpc_fl.runtime.federation import federation_text, load_federation, local_federation
        from mpc_fl.serving import BankService, FeatureStore, ServiceSettings

        protocol = load_part(model_path(models_dir, "bank"), role="bank").protocol
        fed, self.keys = local_federation(
            ("bank", "provider"), work_dir / "keys", dealer=uses_crypten(protocol)
        )
        self.fed_file = work_dir / "federation.toml"
        self.fed_file.write_text(federation_text(list(fed.members)))
        self.models_dir, self.work_dir = models_dir, work_dir
        self.provider_db = work_dir / "provider.sqlite"
        FeatureStore.from_csv(provider_csv, self.provider_db)  # the provider's own table
        self._cli = [sys.executable, "-m", "mpc_fl.cli"]
        self.procs: dict[str, Any] = {}
        if fed.dealer:
            self.start("dealer")
        self.start("provider")
        store = FeatureStore.from_csv(bank_csv, work_dir / "bank.sqlite")
        settings = ServiceSettings(
            load_federation(self.fed_file, connect_timeout_s=60), "bank", self.keys["bank"],
            model_path(models_dir, "bank"), store,
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
