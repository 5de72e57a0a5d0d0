"""Figures: bytes, fit time and peak memory vs rows on the synthetic SME data (benchmarks/results/scaling*.json)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from _common import LABELS, color, load, missing, phase_bytes, save, units


def family_of(case: str) -> str:
    return "lr" if "_lr" in case else "gbdt"


def main() -> None:
    entries = load("scaling")
    if not entries:
        return missing("scaling")
    cases = [c for c in LABELS if any(e["case"] == c for e in entries)]
    for metric, ylabel, name in [
        (lambda e: phase_bytes(e, ("training",)), "bytes sent per {unit} (all parties)", "bytes_vs_rows"),
        (lambda e: e["fit_s"], "training seconds per {unit}", "time_vs_rows"),
    ]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, family in zip(axes, ("lr", "gbdt"), strict=True):
            unit = "iteration" if family == "lr" else "tree"
            for c in [c for c in cases if family_of(c) == family]:
                rows = sorted((e for e in entries if e["case"] == c), key=lambda e: e["n_train"])
                xs = [e["n_train"] for e in rows]
                ys = [metric(e) / units(e)[0] for e in rows]
                ax.plot(xs, ys, "o-", label=LABELS[c], color=color(c), alpha=0.5 if "plain" in c else 1.0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("training rows")
            ax.set_ylabel(ylabel.format(unit=unit))
            ax.set_title("logistic regression" if family == "lr" else "gradient-boosted trees")
            ax.legend(fontsize=8)
        fig.tight_layout()
        save(fig, name)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for c in cases:
        rows = sorted((e for e in entries if e["case"] == c), key=lambda e: e["n_train"])
        peaks = [max(p["peak_rss_mb"] for p in e["parties"].values()) / 1e3 for e in rows]
        style = "o-" if family_of(c) == "lr" else "s--"
        ax.plot([e["n_train"] for e in rows], peaks, style, label=LABELS[c], color=color(c))
    ax.set_xscale("log")
    ax.set_xlabel("training rows")
    ax.set_ylabel("peak memory of the largest party, GB")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, "memory_vs_rows")


if __name__ == "__main__":
    main()
