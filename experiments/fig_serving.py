"""Figure: latency of the scoring service per application, loopback and predicted WAN
(benchmarks/results/serving.json)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from _common import LABELS, color, load, missing, save

ORDER = list(LABELS)


def main() -> None:
    entries = sorted(load("serving"), key=lambda e: ORDER.index(e["case"]))
    if not entries:
        return missing("serving")
    names = [LABELS[e["case"]] for e in entries]
    y = np.arange(len(entries))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    p50 = [e["latency_ms"]["p50"] for e in entries]
    p99 = [e["latency_ms"]["p99"] for e in entries]
    ax1.barh(y, p99, color="#dddddd", label="p99")
    ax1.barh(y, p50, color=[color(e["case"]) for e in entries], label="p50")
    ax1.axvline(10, ls="--", c="k", lw=0.8)
    ax1.axvline(30, ls=":", c="k", lw=0.8)
    ax1.set_xlabel("ms per application, loopback (targets: p50 10, p99 30)")
    ax1.legend(loc="lower right", fontsize=8)
    ax2.barh(y, [e["predicted_ms"]["WAN"] for e in entries], color=[color(e["case"]) for e in entries])
    ax2.set_xscale("log")
    ax2.set_xlabel("predicted ms per application, WAN (40 ms RTT, 100 Mbit/s)")
    ax1.set_yticks(y, names)
    ax1.invert_yaxis()
    fig.suptitle("Scoring service: one loan application per query (default_credit model)")
    fig.tight_layout()
    save(fig, "serving_latency")


if __name__ == "__main__":
    main()
