"""Local runs: every party (and the dealer) as its own ``mpc-fl`` process, and what a run reports.

The CLI (``mpc-fl run``), the demo and the benchmarks all start runs here, over a fresh
local federation per run (:func:`mpc_fl.runtime.launch.run_parties_locally`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    connect_timeout: float = 60.0,
    keep_scores: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """Start every party as its own ``mpc-fl party`` process over a fresh local federation; return the run record.

    ``quiet=False`` relays the bank's progress lines to this process's stderr.
    """
    from mpc_fl.protocols import check_options, uses_crypten
    from mpc_fl.runtime.launch import run_parties_locally

    check_options(protocol, options)  # a misspelt parameter fails here, before any process starts
    party_args = ["--align", align, "--split", split]
    party_args += ["--keep-scores"] if keep_scores else []
    party_args += ["--insecure-tfp"] if insecure_tfp else []
    return run_parties_locally(
        bank, providers, protocol, options, out_dir,
        dealer=uses_crypten(protocol) and not insecure_tfp,
        party_args=party_args, bank_args=["--split-key", str(split_key)] if split_key else [],
        connect_timeout=connect_timeout, insecure_cleartext=insecure_cleartext, relay_progress=not quiet,
    )  # fmt: skip


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
