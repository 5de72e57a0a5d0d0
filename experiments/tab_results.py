"""Tables and quoted numbers of the paper, from recorded results only.

Writes ``paper/numbers/tables.md`` (Markdown tables, pasted into the paper by
``paper/build.py``) and ``paper/numbers/numbers.json`` (every number the text quotes).
"""

from __future__ import annotations

import json

from _common import LABELS, NUMBERS, dealer_bytes, emulated_validation, load, phase_bytes, units


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f}"


def _peak(e: dict) -> str:
    peaks = [p.get("peak_rss_mb") for p in e["parties"].values()]
    return f"{max(peaks):,.0f}" if all(v is not None for v in peaks) else "not recorded"


def _peak_gb(e: dict) -> float:
    """The largest party's peak memory, GB."""
    return round(max(p["peak_rss_mb"] for p in e["parties"].values()) / 1e3, 2)


def protocol_table(entries: list[dict], dataset: str, numbers: dict) -> list[str]:
    rows = sorted(
        (e for e in entries if e.get("dataset") == dataset), key=lambda e: list(LABELS).index(e["case"])
    )
    if not rows:
        return []
    out = [
        f"**{dataset}** ({rows[0]['n_train']} training rows)",
        "",
        "| protocol | AUC | KS | precision@10% | MB sent (train + score) | MB per iter/tree "
        "| dealer MB (train + score) | rounds | fit s | peak RSS MB (largest party) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in rows:
        m = e["metrics"]
        n_units, unit = units(e)
        train = phase_bytes(e, ("setup", "training"))
        total = phase_bytes(e)
        dealer = dealer_bytes(e)
        out.append(
            f"| {LABELS[e['case']]} | {m['auc']:.4f} | {m['ks']:.4f} | {m['precision_at_10pct']:.3f} | "
            f"{_mb(total)} | {_mb(train / n_units)} /{unit} | {_mb(dealer) if dealer else '–'} "
            f"| {e['traffic']['total']['rounds']:,} | {e['fit_s']:.1f} | {_peak(e)} |"
        )
        key = f"{dataset}.{e['case']}"
        numbers[f"{key}.rounds_per_unit"] = round(rounds_per_unit(e))
        numbers[f"{key}.mb_per_unit"] = round(train / n_units / 1e6, 2)
        numbers[f"{key}.auc"] = round(m["auc"], 4)
        numbers[f"{key}.mb_total"] = round(total / 1e6, 2)
        numbers[f"{key}.dealer_mb_total"] = round(dealer / 1e6, 2)
        numbers[f"{key}.fit_s"] = round(e["fit_s"], 1)
    return out + [""]


def rounds_per_unit(e: dict) -> float:
    """The bank's communication calls in the training phase per iteration or tree (the ledger's rounds)."""
    return e["parties"]["bank"]["ledger"]["by_phase"]["training"]["rounds"] / units(e)[0]


SIGMOIDS = ("poly", "exact", "hard", "taylor1")


GBDT_STEPS = ("gradients", "histograms", "gains", "argmax", "routing", "leaves")


GBDT_MODES = {"ss_gbdt": "default", "ss_gbdt_oblivious": "oblivious"}


def _step_costs(e: dict) -> dict[str, tuple[float, float, float, float]]:
    """Per step and in total, per tree: MB sent by all parties, bank rounds, platform rounds, bank s."""
    n_trees = units(e)[0]
    ledgers = {r: p["ledger"] for r, p in e["parties"].items()}
    steps = {r: led["by_step"] for r, led in ledgers.items()}
    out = {}
    for name in (*GBDT_STEPS, "total"):
        if name == "total":
            cost = {r: led["by_phase"]["training"] for r, led in ledgers.items()}
        else:
            cost = {r: st.get(f"training/{name}", {}) for r, st in steps.items()}
        sent = sum(c.get("bytes_sent", 0) for c in cost.values())
        out[name] = (
            sent / n_trees,
            cost["bank"].get("rounds", 0) / n_trees,
            cost["provider"].get("rounds", 0) / n_trees,
            cost["bank"].get("wall_s", 0.0) / n_trees,
        )
    return out


def gbdt_steps_table(entries: list[dict], numbers: dict) -> list[str]:
    """Where SS-GBDT's training bytes and rounds go, per tree (default_credit), default and oblivious mode."""
    found = {
        case: e
        for case in GBDT_MODES
        for e in entries
        if e.get("case") == case
        and e.get("dataset") == "default_credit"
        and "by_step" in e["parties"]["bank"]["ledger"]
    }
    if not found:
        return []
    costs = {case: _step_costs(e) for case, e in found.items()}
    keys = {"ss_gbdt": "gbdt_steps", "ss_gbdt_oblivious": "gbdt_steps_oblivious"}  # numbers.json prefixes
    head = "| step (per tree) |" + "".join(
        f" {GBDT_MODES[c]}: MB sent, all parties | bank rounds | platform rounds | bank s |" for c in costs
    )
    out = [head, "|---|" + "---:|---:|---:|---:|" * len(costs)]
    for name in (*GBDT_STEPS, "total"):
        label = "training (all steps, and the dealer requests)" if name == "total" else name
        cells = ""
        for case, cost in costs.items():
            mb, rb, rp, secs = cost[name]
            cells += f" {_mb(mb)} | {rb:,.0f} | {rp:,.0f} | {secs:.2f} |"
            key = keys[case]
            numbers[f"{key}.{name}.mb"] = round(mb / 1e6, 1)
            numbers[f"{key}.{name}.bank_rounds"] = round(rb)
            numbers[f"{key}.{name}.platform_rounds"] = round(rp)
        out.append(f"| {label} |{cells}")
    # the dealer's correlations are not sent by a party, so the rows above leave them out
    cells = ""
    for case, e in found.items():
        mb = dealer_bytes(e, ("training",)) / units(e)[0]
        cells += f" {_mb(mb)} | | | |"
        numbers[f"{keys[case]}.dealer.mb"] = round(mb / 1e6, 1)
    out.append(f"| the dealer's traffic with the bank (its correlations, and the requests) |{cells}")
    return out + [""]


def mask_table(entries: list[dict], numbers: dict) -> list[str]:
    lr = {e["case"]: e for e in entries if e["case"].startswith("ss_lr")}
    if not lr:
        return []
    out = [
        "| sigmoid | generic MB/iter | fixed-mask MB/iter | reduction | generic rounds/iter | fixed rounds/iter "
        "| generic s/iter | fixed s/iter |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in SIGMOIDS:
        g, f = lr.get(f"ss_lr_generic_{s}"), lr.get(f"ss_lr_fixed_{s}")
        if not (g and f):
            continue
        n = units(g)[0]
        gb, fb = phase_bytes(g, ("training",)) / n, phase_bytes(f, ("training",)) / n
        out.append(
            f"| {s} | {_mb(gb)} | {_mb(fb)} | {gb / fb:.1f}x | {rounds_per_unit(g):.0f} | {rounds_per_unit(f):.0f} "
            f"| {g['fit_s'] / n:.3f} | {f['fit_s'] / n:.3f} |"
        )
        numbers[f"mask.lr.{s}.reduction"] = round(gb / fb, 1)
        numbers[f"mask.lr.{s}.fixed_mb_per_iter"] = round(fb / 1e6, 3)
        numbers[f"mask.lr.{s}.fixed_rounds_per_iter"] = round(rounds_per_unit(f))
        numbers[f"mask.lr.{s}.generic_rounds_per_iter"] = round(rounds_per_unit(g))
    gbdt = {e["case"]: e for e in entries if e["case"].startswith("ss_gbdt")}
    if "ss_gbdt_generic" in gbdt and "ss_gbdt_fixed" in gbdt:
        gb = phase_bytes(gbdt["ss_gbdt_generic"], ("training",))
        fb = phase_bytes(gbdt["ss_gbdt_fixed"], ("training",))
        numbers["mask.gbdt.training_reduction"] = round(gb / fb, 1)
        out += ["", f"SS-GBDT (1 tree, depth 2): training {_mb(gb)} MB generic vs {_mb(fb)} MB fixed-mask "
                f"({gb / fb:.1f}x; the fixed-mask setup opening adds "
                f"{_mb(phase_bytes(gbdt['ss_gbdt_fixed'], ('setup',)))} MB once)."]  # fmt: skip
    return out + [""]


PSI_LABELS = {"psi_ecdh": "ECDH", "psi_rr22": "RR22", "psi_kkrt": "KKRT"}


def _psi_wire(e: dict) -> float:
    """Both directions, as the bank's link counts them (TLS records included)."""
    t = e["parties"]["bank"]["ledger"]["by_phase"]["alignment"]
    return t["bytes_sent"] + t["bytes_recv"]


def psi_table(entries: list[dict], numbers: dict) -> list[str]:
    """Balanced runs (n ids per side, half common) per protocol, then the unbalanced case."""
    if not entries:
        return []
    balanced = [e for e in entries if "n_ids_per_side" in e]
    sizes = sorted({e["n_ids_per_side"] for e in balanced})
    out = [
        "| protocol | " + " | ".join(f"{n:,} ids per side" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for proto, label in PSI_LABELS.items():
        cells = []
        for n in sizes:
            e = next((e for e in balanced if e["protocol"] == proto and e["n_ids_per_side"] == n), None)
            if e is None:
                cells.append("not run")
                continue
            secs = e["_stats"]["mean"]
            cells.append(f"{secs:,.1f} s, {_mb(_psi_wire(e))} MB")
            numbers[f"psi.{proto}.{n}.seconds"] = round(secs, 1)
            numbers[f"psi.{proto}.{n}.mb"] = round(_psi_wire(e) / 1e6, 1)
        if any(c != "not run" for c in cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    unbalanced = [e for e in entries if "n_provider" in e]
    if unbalanced:
        e0 = unbalanced[0]
        out += [
            "",
            f"Unbalanced: the bank holds {e0['n_bank']:,} ids, the platform {e0['n_provider']:,} "
            f"({e0['n_common']:,} common).",
            "",
            "| protocol | receiver | seconds | MB (both directions) | peak RSS bank / platform MB |",
            "|---|---|---:|---:|---:|",
        ]
        for e in sorted(unbalanced, key=lambda e: e["_stats"]["mean"]):
            secs = e["_stats"]["mean"]
            who = "bank (smaller set)" if e["receiver"] == "smaller" else "platform (larger set)"
            rss = " / ".join(f"{e['parties'][r]['peak_rss_mb']:,.0f}" for r in ("bank", "provider"))
            out.append(f"| {PSI_LABELS[e['protocol']]} | {who} | {secs:,.1f} | {_mb(_psi_wire(e))} | {rss} |")
            numbers[f"psi.unbalanced.{e['protocol']}.{e['receiver']}.seconds"] = round(secs, 1)
    return out + [""]


def security_table(entries: list[dict], numbers: dict) -> list[str]:
    """What the secure defaults cost: the PRG against MT19937, TLS links against cleartext ones."""
    if not entries:
        return []
    out = ["| PRG (one core) | 10^4 elements | 10^6 elements | 10^7 elements |", "|---|---:|---:|---:|"]
    for gen, label in (("chacha20", "ChaCha20 (ours)"), ("mt19937", "MT19937 (CrypTen's, insecure)")):
        rates = {e["n_elements"]: e["elements_per_s"] for e in entries if e.get("generator") == gen}
        if rates:
            out.append(
                f"| {label} | "
                + " | ".join(f"{rates.get(n, 0) / 1e6:,.0f} M/s" for n in (10**4, 10**6, 10**7))
                + " |"
            )
            numbers[f"security.prg.{gen}.m_per_s_1e6"] = round(rates.get(10**6, 0) / 1e6)
    out += [
        "",
        "| run (default_credit) | links | fit s | MB sent (all parties) | TLS overhead |",
        "|---|---|---:|---:|---:|",
    ]
    runs = {e["case"]: e for e in entries if "link_mode" in e}
    for case, label in (("ss_lr", "SS-LR, 1 epoch"), ("ss_gbdt", "SS-GBDT, 2 trees")):
        tls, clear = runs.get(f"{case}_tls"), runs.get(f"{case}_cleartext")
        if not (tls and clear):
            continue
        tb, cb = tls["traffic"]["total"]["bytes_sent"], clear["traffic"]["total"]["bytes_sent"]
        for e, mode in ((clear, "cleartext (debug only)"), (tls, "TLS 1.3 (default)")):
            extra = (
                f"{100 * (tb / cb - 1):+.1f}% bytes, {100 * (tls['fit_s'] / clear['fit_s'] - 1):+.0f}% time"
                if e is tls
                else ""
            )
            out.append(
                f"| {label} | {mode} | {e['fit_s']:.1f} | {_mb(e['traffic']['total']['bytes_sent'])} | {extra} |"
            )
        numbers[f"security.tls.{case}.bytes_pct"] = round(100 * (tb / cb - 1), 2)
        numbers[f"security.tls.{case}.time_pct"] = round(100 * (tls["fit_s"] / clear["fit_s"] - 1), 1)
    return out + [""]


def leakage_table(entries: list[dict], numbers: dict) -> list[str]:
    """SS-GBDT: nodes whose rows a party can reconstruct (it owns every split on the path).

    Records with ``nodes`` count internal nodes and leaves beyond those every party knows;
    earlier records have only the internal-node count, which includes publicly empty nodes.
    """
    rows = [
        e
        for e in entries
        if e["case"] == "ss_gbdt" and e.get("dataset") and e.get("run_info", {}).get("reconstructable_nodes")
    ]
    if not rows:
        return []
    out = [
        "| dataset | party | non-root nodes beyond the public ones | of which leaves | non-root internal nodes "
        "(incl. publicly empty) | publicly empty |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for e in sorted(rows, key=lambda e: e["dataset"]):
        for role, c in e["run_info"]["reconstructable_nodes"].items():
            nodes = f"{c['nodes']} of {c['nodes_total']}" if "nodes" in c else "not recorded"
            leaves = c.get("nodes_leaves", "not recorded")
            out.append(
                f"| {e['dataset']} | {role} | {nodes} | {leaves} | {c['internal']} of {c['internal_total']} | "
                f"{c['empty']} |"
            )
            numbers[f"leakage.{e['dataset']}.{role}.internal"] = c["internal"]
            if "nodes" in c:
                numbers[f"leakage.{e['dataset']}.{role}.nodes"] = c["nodes"]
    return out + [""]


def lr_reference_table(entries: list[dict], numbers: dict) -> list[str]:
    """Our default LR against scikit-learn's LogisticRegression() on every dataset."""
    if not entries:
        return []
    out = [
        "| dataset | training rows | largest standardised value | our LR AUC (robust scaling) | iterations "
        "| scikit-learn AUC (standard scaling) | scikit-learn on our scaling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = ["breast", "default_credit", "sme", "heavy_tailed"]
    for e in sorted(entries, key=lambda e: order.index(e["dataset"]) if e["dataset"] in order else 99):
        out.append(
            f"| {e['dataset']} | {e['n_train']:,} | {e['max_abs_standardised']:.0f} | {e['ours_auc']:.4f} | "
            f"{e['iterations']} | {e['sklearn_auc']:.4f} | {e['sklearn_on_our_scaling_auc']:.4f} |"
        )
        numbers[f"lr_reference.{e['dataset']}.ours"] = round(e["ours_auc"], 4)
        numbers[f"lr_reference.{e['dataset']}.sklearn"] = round(e["sklearn_auc"], 4)
    return out + [""]


def sigmoid_table(reference: list[dict], mask: list[dict], numbers: dict) -> list[str]:
    """Sigmoid candidates: AUC change against the exact logistic per dataset, and rounds in SS-LR."""
    if not reference or "sigmoid_candidates_auc" not in reference[0]:
        return []
    order = ["breast", "default_credit", "sme", "heavy_tailed"]
    reference = sorted(reference, key=lambda e: order.index(e["dataset"]) if e["dataset"] in order else 99)
    default = reference[0]["default_sigmoid"]
    default_name = f"poly_b{default['bound']:g}_d{default['degree']}"
    fixed = {e["case"].removeprefix("ss_lr_fixed_"): e for e in mask if e["case"].startswith("ss_lr_fixed_")}
    names = list(reference[0]["sigmoid_candidates_auc"])
    out = [
        "| sigmoid | "
        + " | ".join(f"{e['dataset']} AUC - exact" for e in reference)
        + " | worst | SS-LR rounds/iter |",
        "|---|" + "---:|" * (len(reference) + 2),
    ]
    for name in names:
        deltas = [e["sigmoid_candidates_auc"][name] - e["sigmoid_candidates_auc"]["exact"] for e in reference]
        method = "poly" if name == default_name else name
        rounds = f"{rounds_per_unit(fixed[method]):.0f}" if method in fixed else ""
        label = name.replace("poly_b", "poly B=").replace("_d", ", d=") + (
            " (default)" if name == default_name else ""
        )
        worst = max(deltas, key=abs)
        out.append(
            f"| {label} | " + " | ".join(f"{d:+.4f}" for d in deltas) + f" | {worst:+.4f} | {rounds} |"
        )
        numbers[f"sigmoid.{name}.worst_delta"] = round(worst, 4)
    if "exact" in fixed and "poly" in fixed:
        numbers["sigmoid.rounds.exact"] = round(rounds_per_unit(fixed["exact"]))
        numbers["sigmoid.rounds.poly"] = round(rounds_per_unit(fixed["poly"]))
    return out + [""]


def round_cost_table(entries: list[dict], numbers: dict) -> list[str]:
    """The fixed cost of one round on loopback through each layer of the stack."""
    if not entries:
        return []
    sizes = sorted({e["message_bytes"] for e in entries})
    layers = {
        "tcp": "raw TCP, Python sockets (the floor)",
        "mesh_cleartext": "our stack, cleartext links (debug)",
        "mesh_tls": "our stack, TLS 1.3 (default)",
    }
    out = ["| layer | " + " | ".join(f"{s:,} B" for s in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for layer, label in layers.items():
        ms = {e["message_bytes"]: e["ms_per_round"] for e in entries if e["layer"] == layer}
        if ms:
            out.append(
                f"| {label} | " + " | ".join(f"{ms.get(s, float('nan')):.3f} ms" for s in sizes) + " |"
            )
            for s in sizes:
                if s in ms:
                    numbers[f"round_cost.{layer}.{s}"] = round(ms[s], 3)
    return out + [""]


def scaling_table(entries: list[dict], numbers: dict) -> list[str]:
    """Per protocol and size: cost per iteration or tree, and each party's peak memory."""
    if not entries:
        return []
    out = [
        "| protocol | training rows | MB per iter/tree | rounds per iter/tree (bank) | s per iter/tree "
        "| peak RSS MB: bank / platform |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for e in sorted(entries, key=lambda e: (list(LABELS).index(e["case"]), e["n_train"])):
        n, unit = units(e)
        peaks = " / ".join(
            f"{e['parties'][r]['peak_rss_mb']:,.0f}" if r in e["parties"] else "-"
            for r in ("bank", "provider")
        )
        out.append(
            f"| {LABELS[e['case']]} | {e['n_train']:,} | {_mb(phase_bytes(e, ('training',)) / n)} /{unit} | "
            f"{rounds_per_unit(e):,.0f} | {e['fit_s'] / n:.3f} | {peaks} |"
        )
        key = f"scaling.{e['case']}.{e['n_train']}"
        numbers[f"{key}.s_per_unit"] = round(e["fit_s"] / n, 3)
        numbers[f"{key}.peak_gb"] = _peak_gb(e)
    return out + [""]


def million_table(entries: list[dict], numbers: dict) -> list[str]:
    """SS-GBDT at 1,000,000 rows with depth-4 trees: per tree, and each party's peak memory."""
    if not entries:
        return []
    out = [
        "| mode (1,000,000 rows, depth 4) | s per tree | MB per tree | rounds per tree (bank / platform) "
        "| set-up s | peak RSS MB: bank / platform | AUC |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in sorted(entries, key=lambda e: list(LABELS).index(e["case"])):
        n = units(e)[0]
        led = {r: p["ledger"]["by_phase"] for r, p in e["parties"].items()}
        train_s = max(ph["training"]["wall_s"] for ph in led.values())
        setup_s = max(ph["setup"]["wall_s"] for ph in led.values())
        rounds = " / ".join(f"{led[r]['training']['rounds'] / n:,.0f}" for r in ("bank", "provider"))
        peaks = " / ".join(f"{e['parties'][r]['peak_rss_mb']:,.0f}" for r in ("bank", "provider"))
        out.append(
            f"| {GBDT_MODES[e['case']]} | {train_s / n:.1f} | {_mb(phase_bytes(e, ('training',)) / n)} | {rounds} "
            f"| {setup_s:.1f} | {peaks} | {e['metrics']['auc']:.4f} |"
        )
        key = f"million.{e['case']}"
        numbers[f"{key}.s_per_tree"] = round(train_s / n, 1)
        numbers[f"{key}.setup_s"] = round(setup_s, 1)
        numbers[f"{key}.peak_gb"] = _peak_gb(e)
        numbers[f"{key}.peak_gb_platform"] = round(e["parties"]["provider"]["peak_rss_mb"] / 1e3, 2)
    return out + [""]


def network_table(entries: list[dict], numbers: dict) -> list[str]:
    """Measured fit time over emulated links against the network model's prediction."""
    rows = emulated_validation(entries)
    if not rows:
        return []
    out = [
        "| protocol (default_credit, cut) | RTT ms | Mbit/s | measured s | model s | model error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case, points in rows.items():
        for p in points:
            err = p["predicted_s"] / p["measured_s"] - 1
            out.append(
                f"| {LABELS[case]} | {p['rtt_ms']:g} | {p['mbit']:g} | {p['measured_s']:.1f} | "
                f"{p['predicted_s']:.1f} | {100 * err:+.0f}% |"
            )
            numbers[f"network.emulated.{case}.rtt{p['rtt_ms']:g}.error_pct"] = round(100 * err)
    return out + [""]


def serving_table(entries: list[dict], numbers: dict) -> list[str]:
    """The scoring service: latency per application, traffic per query, batched throughput."""
    if not entries:
        return []
    out = [
        "| model (default_credit) | p50 ms | p99 ms | KB per query | rounds per query | applications/s "
        "(batches of 100) | predicted WAN ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in sorted(entries, key=lambda e: list(LABELS).index(e["case"])):
        lat = e["latency_ms"]
        out.append(
            f"| {LABELS[e['case']]} | {lat['p50']:.1f} | {lat['p99']:.1f} | {e['bytes_per_query'] / 1e3:,.1f} | "
            f"{e['rounds_per_query']:.0f} | {e['throughput_per_s']:,.0f} | {e['predicted_ms']['WAN']:,.0f} |"
        )
        key = f"serving.{e['case']}"
        numbers[f"{key}.p50_ms"] = round(lat["p50"], 1)
        numbers[f"{key}.p99_ms"] = round(lat["p99"], 1)
        numbers[f"{key}.per_s"] = round(e["throughput_per_s"])
        numbers[f"{key}.wan_ms"] = round(e["predicted_ms"]["WAN"])
    return out + [""]


def referral_table(entries: list[dict], numbers: dict) -> list[str]:
    """The shortlist's lift among platform-only SMEs per protocol, and the cost at 5,000 and 100,000."""
    lists = [e for e in entries if e.get("population") == "provider_only"]
    if not lists:
        return []
    order = list(LABELS)
    out = [
        "| protocol | K of n | lift@K | plaintext lift@K | ratio | precision@K | MB (parties + dealer) | "
        "rounds | s | 100,000 prospects: MB | rounds | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    small = {e["case"]: e for e in lists if e["n_scored"] < 100_000}
    large = {e["case"]: e for e in lists if e["n_scored"] >= 100_000}
    for case in sorted(small, key=order.index):
        e, big = small[case], large.get(case)
        mb = (e["bytes"] + e["dealer_bytes"]) / 1e6
        cost = (
            f"{(big['bytes'] + big['dealer_bytes']) / 1e6:,.0f} | {big['rounds']:,} | {big['wall_s']:.1f}"
            if big
            else "– | – | –"
        )
        out.append(
            f"| {LABELS[case]} | {e['k']:,} of {e['n_scored']:,} | {e['lift_at_k']:.2f} | "
            f"{e['plaintext_lift_at_k']:.2f} | {e['lift_vs_plaintext']:.3f} | {e['precision_at_k']:.3f} | "
            f"{mb:,.1f} | {e['rounds']:,} | {e['wall_s']:.1f} | {cost} |"
        )
        key = f"referral.{case}"
        numbers[f"{key}.lift"] = round(e["lift_at_k"], 2)
        numbers[f"{key}.plaintext_lift"] = round(e["plaintext_lift_at_k"], 2)
        numbers[f"{key}.ratio"] = round(e["lift_vs_plaintext"], 3)
        if big:
            numbers[f"{key}.100k.mb"] = round((big["bytes"] + big["dealer_bytes"]) / 1e6)
            numbers[f"{key}.100k.s"] = round(big["wall_s"], 1)
            numbers[f"{key}.100k.lift"] = round(big["lift_at_k"], 2)
    for e in entries:
        if e.get("case") == "attribution":
            numbers["referral.attribution.mb"] = round(e["bytes"] / 1e6, 1)
            numbers["referral.attribution.s"] = round(e["wall_s"], 1)
            numbers["referral.attribution.rounds"] = e["rounds"]
    ratios = [e["lift_vs_plaintext"] for e in small.values() if not e["case"].startswith("plain")]
    numbers["referral.min_ratio"] = round(min(ratios), 3)
    numbers["referral.random_precision"] = round(next(iter(small.values()))["random_precision"], 3)
    return out


def decisions_table(entries: list[dict], numbers: dict) -> list[str]:
    """Reason codes: agreement with the plaintext twin, and single-application latency with and without."""
    # decisions.json only: decisions_same_trees.json re-measures SS-GBDT, decisions_monotone.json is monotone_table's
    rows = [e for e in entries if e.get("dataset") == "default_credit" and e["_file"] == "decisions.json"]
    if not rows:
        return []
    out = [
        "| model (default_credit) | top-R agreement | p50 ms | p99 ms | p99 ms without | ratio | KB per "
        "application | without | rounds | without |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in sorted(rows, key=lambda e: list(LABELS).index(e["case"])):
        share = "reference" if e["top_r_agreement"] is None else f"{e['top_r_agreement']:.4f}"
        out.append(
            f"| {LABELS[e['case']]} | {share} | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | "
            f"{e['p99_ms_without']:.1f} | {e['ratio_p99']:.2f} | {e['bytes_per_application'] / 1e3:,.1f} | "
            f"{e['bytes_per_application_without'] / 1e3:,.1f} | {e['rounds_per_application']:.0f} | "
            f"{e['rounds_per_application_without']:.0f} |"
        )
        key = f"decisions.{e['case']}"
        numbers[f"{key}.agreement"] = None if e["top_r_agreement"] is None else round(e["top_r_agreement"], 4)
        numbers[f"{key}.p99_ms"] = round(e["p99_ms"], 1)
        numbers[f"{key}.ratio"] = round(e["ratio_p99"], 2)
        numbers[f"{key}.rounds"] = round(e["rounds_per_application"])
    numbers["decisions.reasons"] = rows[0]["reasons"]
    numbers["decisions.n_test"] = rows[0]["n_test"]
    return out + [""]


def monotone_table(entries: list[dict], numbers: dict) -> list[str]:
    """Monotone constraints: wrong-way steps on the grid check with and without them, and their AUC cost."""
    rows = [e for e in entries if e.get("kind") == "monotone"]
    if not rows:
        return []
    out = [
        "| model (default_credit) | wrong-way steps | without constraints | AUC | without | AUC cost | "
        "rounds | without |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in sorted(rows, key=lambda e: list(LABELS).index(e["case"])):
        out.append(
            f"| {LABELS[e['case']]} | {e['monotone_violations']} | {e['monotone_violations_unconstrained']} | "
            f"{e['auc']:.4f} | {e['auc_unconstrained']:.4f} | {e['auc_cost']:+.4f} | {e['rounds']:,} | "
            f"{e['rounds_unconstrained']:,} |"
        )
        key = f"monotone.{e['case']}"
        numbers[f"{key}.violations"] = e["monotone_violations"]
        numbers[f"{key}.violations_unconstrained"] = e["monotone_violations_unconstrained"]
        numbers[f"{key}.auc_cost"] = round(e["auc_cost"], 4)
        numbers[f"{key}.rounds_ratio"] = round(e["rounds"] / e["rounds_unconstrained"], 2)
    numbers["monotone.grid_steps"] = rows[0]["grid_steps"]
    numbers["monotone.grid_rows"] = rows[0]["grid_rows"]
    return out + [""]


def main() -> None:
    numbers: dict = {}
    protocols = load("protocols")
    sections = {
        "protocols": sum((protocol_table(protocols, ds, numbers) for ds in ("default_credit", "sme")), []),
        "gbdt_steps": gbdt_steps_table(protocols, numbers),
        "mask": mask_table(load("mask"), numbers),
        "psi": psi_table(load("psi"), numbers),
        "security": security_table(load("security_cost"), numbers),
        "leakage": leakage_table(protocols, numbers),
        "lr_reference": lr_reference_table(load("lr_reference"), numbers),
        "sigmoid": sigmoid_table(load("lr_reference"), load("mask"), numbers),
        "round_cost": round_cost_table(load("round_cost"), numbers),
        "network": network_table(load("network"), numbers),
        "scaling": scaling_table(load("scaling"), numbers),
        "million": million_table(load("million"), numbers),
        "serving": serving_table(load("serving"), numbers),
        "referral": referral_table(load("referral"), numbers),
        "decisions": decisions_table(load("decisions"), numbers),
        "monotone": monotone_table(load("decisions"), numbers),
    }
    NUMBERS.mkdir(parents=True, exist_ok=True)
    network = NUMBERS / "network.json"
    if network.exists():  # written by fig_network.py from the same recorded results
        numbers.update(json.loads(network.read_text()))
    text = "".join(f"<!-- table:{k} -->\n" + "\n".join(v) + "\n" for k, v in sections.items())
    (NUMBERS / "tables.md").write_text(text)
    (NUMBERS / "numbers.json").write_text(json.dumps(numbers, indent=1, sort_keys=True))
    print(f"wrote paper/numbers/tables.md and numbers.json ({len(numbers)} numbers)")


if __name__ == "__main__":
    main()
