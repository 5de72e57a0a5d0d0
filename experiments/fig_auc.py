"""Figure: test AUC of every protocol on each dataset (benchmarks/results/protocols*.json)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from _common import LABELS, color, load, missing, save

ORDER = list(LABELS)


def main() -> None:
    entries = [e for e in load("protocols") if e.get("dataset")]
    if not entries:
        return missing("protocols")
    datasets = sorted({e["dataset"] for e in entries})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        rows = sorted((e for e in entries if e["dataset"] == ds), key=lambda e: ORDER.index(e["case"]))
        ax.barh(
            [LABELS[e["case"]] for e in rows],
            [e["metrics"]["auc"] for e in rows],
            color=[color(e["case"]) for e in rows],
        )
        lo = min(e["metrics"]["auc"] for e in rows)
        ax.set_xlim(lo - 0.03, max(e["metrics"]["auc"] for e in rows) + 0.01)
        for y, e in enumerate(rows):
            ax.text(e["metrics"]["auc"], y, f" {e['metrics']['auc']:.4f}", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(ds)
        ax.set_xlabel("test AUC")
    fig.tight_layout()
    save(fig, "auc_by_protocol")


if __name__ == "__main__":
    main()
