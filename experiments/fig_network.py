"""Figure: training time under LAN and WAN, from recorded bytes and rounds (mpc_fl.netmodel).

Left: the cost model applied to each protocol's recorded default_credit run
(compute = its loopback time). Middle: the model against runs over links emulated in our
transport at 5, 20 and 40 ms RTT and 100 Mbit/s (benchmarks/results/network.json; each
protocol's unshaped run is the model's input). Right: the bandwidth term against kernel
shaping with htb (benchmarks/results/netem_check.json).
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
from _common import LABELS, NUMBERS, RESULTS, color, emulated_validation, load, missing, save

from mpc_fl.netmodel import LAN, WAN, latency_s, predict_from_ledgers, traffic_summary, transfer_s


def main() -> None:
    entries = [e for e in load("protocols") if e.get("dataset") == "default_credit"]
    netem_path = RESULTS / "netem_check.json"
    if not entries and not netem_path.exists():
        return missing("protocols / netem_check")
    emulated = emulated_validation(load("network"))
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [2, 1.2, 1]})
    numbers = {}
    rows = sorted(entries, key=lambda e: list(LABELS).index(e["case"]))
    labels, y = [], 0
    for e in rows:
        s = traffic_summary({r: p["ledger"] for r, p in e["parties"].items()}, ("setup", "training"))
        for profile in (LAN, WAN):
            parts = [
                s["wall_s"],
                latency_s(s["rounds"], profile),
                transfer_s(s["bytes_sent_max_party"], profile),
            ]
            left = 0.0
            for value, colour in zip(parts, ["#7f7f7f", "#ff7f0e", "#1f77b4"], strict=True):
                ax1.barh(y, value, left=left, color=colour)
                left += value
            numbers[f"network.{e['case']}.{profile.name}"] = round(left, 1)
            labels.append(f"{LABELS[e['case']]} ({profile.name})")
            y += 1
    for e in (e for e in load("protocols") if e.get("dataset") == "sme"):  # for the text, not the figure
        numbers[f"network.sme.{e['case']}.WAN"] = round(predict_from_ledgers(e, (WAN,))["WAN"], 1)
    ax1.set_yticks(range(len(labels)), labels, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.set_xlabel("predicted training time, s (grey: compute, orange: latency, blue: bandwidth)")
    ax1.set_title(f"default_credit; LAN {LAN.bandwidth_bps / 1e9:g} Gbit/s {LAN.rtt_s * 1e3:g} ms RTT, "
                  f"WAN {WAN.bandwidth_bps / 1e6:g} Mbit/s {WAN.rtt_s * 1e3:g} ms RTT", fontsize=8)  # fmt: skip
    for case, points in emulated.items():
        xs = [p["rtt_ms"] for p in points]
        marker = "o" if case.endswith("lr") or "_lr_" in case else "s"  # LR circles, trees squares
        ax3.plot(xs, [p["predicted_s"] for p in points], "-", color=color(case), alpha=0.5)
        ax3.plot(xs, [p["measured_s"] for p in points], marker, color=color(case), label=LABELS[case])
        for p in points:
            key = f"network.emulated.{case}.rtt{p['rtt_ms']:g}"
            numbers[f"{key}.measured_s"] = round(p["measured_s"], 1)
            numbers[f"{key}.predicted_s"] = round(p["predicted_s"], 1)
    if emulated:
        ax3.set_xlabel("emulated RTT, ms (100 Mbit/s)")
        ax3.set_ylabel("fit time, s (dots: measured, lines: model)")
        ax3.set_yscale("log")
        ax3.legend(fontsize=6)
        ax3.set_title("model vs links emulated in the transport", fontsize=8)
    if netem_path.exists():
        check = json.loads(netem_path.read_text())
        done = [s for s in check["settings"] if s.get("measured_fit_s") is not None]
        xs = [f"{s['rate_mbit']:g} Mbit/s" for s in done]
        ax2.plot(xs, [s["measured_fit_s"] for s in done], "ko", label="measured (htb-shaped veth)")
        ax2.plot(xs, [s["predicted_fit_s"] for s in done], "b^", label="model: larger party's bytes")
        ax2.plot(
            xs, [s["predicted_fit_s_no_overlap"] for s in done], "rv", label="model: both parties' bytes"
        )
        ax2.set_yscale("log")
        ax2.set_ylabel("SS-LR fit time on breast, s")
        ax2.legend(fontsize=7)
        ax2.set_title("bandwidth term vs kernel shaping (htb)", fontsize=8)
    fig.tight_layout()
    save(fig, "lan_vs_wan")
    NUMBERS.mkdir(parents=True, exist_ok=True)
    (NUMBERS / "network.json").write_text(json.dumps(numbers, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
