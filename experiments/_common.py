"""Shared by every figure/table script: read recorded benchmark results, never run a protocol."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

from mpc_fl.protocols import cases

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "paper" / "figures"
NUMBERS = ROOT / "paper" / "numbers"

#: every case's label in figures and tables, from the one table of cases
LABELS = {c.name: c.label for c in cases()}
COLORS = {"plain": "#7f7f7f", "ss": "#1f77b4", "paillier": "#d62728", "secureboost": "#d62728"}


def color(case: str) -> str:
    if case.endswith("_ou3072"):
        return "#ff7f0e"  # the OU baselines beside their ZPaillier twins
    return COLORS[case.split("_")[0]]


def load(suite: str) -> list[dict]:
    """Benchmark entries of ``benchmarks/results/<suite>*.json``: extra_info plus timing stats."""
    entries = []
    for path in sorted(RESULTS.glob(f"{suite}*.json")):
        data = json.loads(path.read_text())
        for b in data.get("benchmarks", []):
            entries.append({**b["extra_info"], "_name": b["name"], "_stats": b["stats"], "_file": path.name})
    return entries


def units(entry: dict) -> tuple[int, str]:
    """Training steps of a recorded run: its trees, or the LR schedule's iterations (as the protocol ran them)."""
    p = entry["params"]
    if "n_trees" in p:
        return p["n_trees"], "tree"
    from mpc_fl.models.lr import LRParams, n_iterations

    known = {k: v for k, v in p.items() if k in LRParams.__dataclass_fields__}
    return n_iterations(entry["n_train"], LRParams(**known)), "iter"


def phase_bytes(entry: dict, phases: tuple[str, ...] = ("setup", "training", "scoring")) -> int:
    """Bytes sent by all parties in the given phases."""
    by_phase = entry["traffic"]["by_phase"]
    return sum(by_phase.get(p, {}).get("bytes_sent", 0) for p in phases)


def dealer_bytes(entry: dict, phases: tuple[str, ...] = ("setup", "training", "scoring")) -> int:
    """Bytes between the parties and the triple dealer in the given phases (both directions).

    Why separate: the dealer is not a party, so ``phase_bytes`` (what parties send) leaves out
    its correlations, which a deployment pays for too.
    """
    by_phase = entry["traffic"]["by_phase"]
    return sum(by_phase.get(p, {}).get("dealer_bytes", 0) for p in phases)


def save(fig, name: str) -> Path:  # noqa: ANN001
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def missing(what: str) -> None:
    print(f"skipped: no recorded results for {what} (run `make bench`)")


def emulated_validation(entries: list[dict]) -> dict[str, list[dict]]:
    """Per protocol: each emulated setting's measured fit time beside the model's prediction."""
    from mpc_fl.netmodel import NetworkProfile, predict_from_ledgers

    out: dict[str, list[dict]] = {}
    for case in LABELS:
        runs = [e for e in entries if e["case"] == case]
        base = next((e for e in runs if not e["rtt_ms"] and not e["mbit"]), None)
        if base is None:
            continue
        for e in sorted((e for e in runs if e is not base), key=lambda e: e["rtt_ms"]):
            profile = NetworkProfile("emulated", e["rtt_ms"] / 1e3, e["mbit"] * 1e6 if e["mbit"] else 1e15)
            predicted = predict_from_ledgers(base, [profile])["emulated"]
            out.setdefault(case, []).append(
                {
                    "rtt_ms": e["rtt_ms"],
                    "mbit": e["mbit"],
                    "measured_s": e["fit_phases_s"],
                    "predicted_s": predicted,
                }
            )
    return out
