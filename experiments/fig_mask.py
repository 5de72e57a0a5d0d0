"""Figure: bytes per training step, CrypTen's generic Beaver products vs the fixed-mask correlation."""

from __future__ import annotations

import matplotlib.pyplot as plt
from _common import load, missing, phase_bytes, save, units


def main() -> None:
    entries = load("mask")
    if not entries:
        return missing("mask")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    lr = [e for e in entries if e["case"].startswith("ss_lr")]
    sigmoids = ["poly", "exact", "hard", "taylor1"]
    width = 0.38
    for i, mask in enumerate(["generic", "fixed"]):
        vals = []
        for s in sigmoids:
            e = next((e for e in lr if e["case"] == f"ss_lr_{mask}_{s}"), None)
            n_iter = units(e)[0] if e else 1
            vals.append(phase_bytes(e, ("training",)) / n_iter if e else 0)
        xs = [x + (i - 0.5) * width for x in range(len(sigmoids))]
        ax1.bar(xs, vals, width, label=mask, color="#aec7e8" if mask == "generic" else "#1f77b4")
        for x, v in zip(xs, vals, strict=True):
            ax1.text(x, v, f"{v / 1e6:.2f}", ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(range(len(sigmoids)), [f"sigmoid: {s}" for s in sigmoids])
    ax1.set_ylabel("bytes sent per iteration (MB labels)")
    ax1.set_title("SS-LR, default_credit, batch 1024")
    ax1.legend()
    gb = {e["case"]: e for e in entries if e["case"].startswith("ss_gbdt")}
    names = [m for m in ("generic", "fixed") if f"ss_gbdt_{m}" in gb]
    vals = [phase_bytes(gb[f"ss_gbdt_{m}"], ("setup", "training")) for m in names]
    ax2.bar(names, vals, color=["#aec7e8", "#1f77b4"][: len(names)])
    for x, v in enumerate(vals):
        ax2.text(x, v, f"{v / 1e6:.0f} MB", ha="center", va="bottom", fontsize=8)
    ax2.set_title("SS-GBDT, 1 tree of depth 2")
    ax2.set_ylabel("bytes sent, setup + training")
    fig.tight_layout()
    save(fig, "bytes_generic_vs_fixed")


if __name__ == "__main__":
    main()
