"""The main job: the bank-and-platform SME scenario end to end, on synthetic data.

1. The generator writes the bank's and the platform's customer files (partial overlap).
2. For each protocol, the parties start as separate processes, align their common
   SMEs with ECDH-PSI, train on the same split, and score held-out SMEs; only the
   bank learns the scores.
3. The report compares secret sharing (CrypTen) with additive HE (OU, FATE/SecretFlow-style)
   and centralised plaintext training, and gives the bank a referral shortlist.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from mpc_fl.data.synthetic_sme import SMEScenario, write_sme_csvs
from mpc_fl.runs import LocalService, result_line, run_protocol_locally
from mpc_fl.serving.decoys import DEFAULT_DECOYS

LR = {"learning_rate": 0.5, "n_epochs": 3, "batch_size": 1024}
GBDT = {"n_trees": 10, "max_depth": 3, "learning_rate": 0.3, "n_bins": 32}
QUICK_LR = {**LR, "n_epochs": 1}
QUICK_GBDT = {**GBDT, "n_trees": 3, "max_depth": 2}

PLAN = [
    ("plain_lr", "plaintext LR (centralised, no privacy)", "lr", {}),
    ("ss_lr", "secret-shared LR (CrypTen, dealer)", "lr", {"mask": "fixed"}),
    (
        "paillier_lr",
        "hetero-LR on OU ({key_bits}-bit, the HE baseline)",
        "lr",
        {"scheme": "ou", "key_bits": 3072},
    ),
    ("plain_gbdt", "plaintext GBDT (centralised, no privacy)", "gbdt", {}),
    ("ss_gbdt", "secret-shared GBDT (CrypTen, dealer)", "gbdt", {"mask": "fixed"}),
    ("secureboost", "SecureBoost on OU ({key_bits}-bit)", "gbdt", {"scheme": "ou", "key_bits": 3072}),
]
SHORTLIST_K = 100
#: The model the scoring service answers applications with, and how many applications the demo sends.
SERVED = "ss_gbdt"
N_APPLICATIONS = 10


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["protocol"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = [
        "#999999" if n.startswith("plain") else "#1f77b4" if n.startswith("ss") else "#d62728" for n in names
    ]
    ax1.barh(names, [r["auc"] for r in rows], color=colors)
    ax1.set_xlim(0.5, max(r["auc"] for r in rows) + 0.05)
    ax1.set_xlabel("test AUC")
    ax2.barh(names, [max(r["bytes"], 1) for r in rows], color=colors)
    ax2.set_xscale("log")
    ax2.set_xlabel("bytes sent, training + scoring (all parties)")
    for ax in (ax1, ax2):
        ax.invert_yaxis()
    fig.suptitle(
        "SME scenario: accuracy and communication (grey: plaintext, blue: CrypTen, red: additive HE, OU)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _reconstructable(record: dict) -> str:
    counts = record.get("run_info", {}).get("reconstructable_nodes", {})
    return (
        "; ".join(
            f"{role} could reconstruct {c['nodes']} of {c['nodes_total']} non-root nodes "
            f"({c['nodes_leaves']} of them leaves) beyond the {c['public']} every party knows"
            for role, c in counts.items()
        )
        or "not reported"
    )


def _serve_applications(out_dir: Path, record: dict, bank_csv: Path, platform_csv: Path) -> list[dict]:
    """Start the scoring service on the saved model and score held-out SMEs as if they had just applied."""
    work = out_dir / "service"
    work.mkdir(parents=True, exist_ok=True)
    service = LocalService(out_dir / "models", bank_csv, platform_csv, work)
    try:
        rows = []
        for sme in record["parties"]["bank"]["test_ids"][:N_APPLICATIONS]:
            t0 = time.perf_counter()
            (r,) = service.bank.score(sme)
            ms = 1e3 * (time.perf_counter() - t0)
            rows.append({"sme_id": sme, "score": r.score, "error": r.error, "latency_ms": ms})
            print(
                f"      application {sme}: "
                + (f"score {r.score:.3f}" if r.error is None else r.error)
                + f" in {ms:.1f} ms"
            )
        return rows
    finally:
        service.stop()


def _service_section(served: list[dict]) -> list[str]:
    ok = [r["latency_ms"] for r in served if r["error"] is None]
    lines = [
        "## Scoring service: new loan applications",
        "",
        f"The secret-shared GBDT was saved (each party its own part), then bank, platform and dealer started "
        f"as a service with their links open; the bank scored {len(served)} applications one at a time, the "
        f"platform reading its features by id from its own SQLite table. Median latency "
        f"{sorted(ok)[len(ok) // 2] if ok else float('nan'):.1f} ms per application on this machine. Each "
        f"application was sent within its fixed anonymity set of {DEFAULT_DECOYS + 1}+ of the bank's customers, so "
        "the platform learns only that one of them applied, the same set however often it is asked; "
        "only the bank sees scores.",
        "",
        "| application (SME id) | score | latency ms |",
        "|---|---:|---:|",
    ]
    for r in served:
        score = f"{r['score']:.3f}" if r["error"] is None else r["error"]
        lines.append(f"| {r['sme_id']} | {score} | {r['latency_ms']:.1f} |")
    return [*lines, ""]


def run_demo(out_dir: Path, n_bank: int = 20000, quick: bool = False, quiet: bool = False) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    scenario = SMEScenario(n_bank=n_bank, overlap=0.6, n_platform_only=n_bank // 4, seed=42)
    print(f"[1/4] generating the synthetic SME scenario: {n_bank} bank customers, 60% also on the platform")
    bank_csv, platform_csv = write_sme_csvs(out_dir / "data", scenario)
    # the bank's secret split key: one split for every protocol, unpredictable to the platform
    split_key = out_dir / "bank-split.key"
    split_key.unlink(missing_ok=True)
    rows, records = [], {}
    print("[2/4] running every protocol with separate party processes (PSI alignment, same split)")
    for i, (protocol, label, family, extra) in enumerate(PLAN, 1):
        base = (QUICK_LR if quick else LR) if family == "lr" else (QUICK_GBDT if quick else GBDT)
        opts = {**base, **extra}
        print(f"  ({i}/{len(PLAN)}) {label.format(**opts)}", flush=True)
        rec = run_protocol_locally(
            bank_csv, [platform_csv], protocol, opts, out_dir / "runs" / protocol,
            split_key=split_key, keep_scores=True, quiet=quiet,
            save_models=out_dir / "models" if protocol == SERVED else None,
        )  # fmt: skip
        records[protocol] = rec
        print("      " + result_line(protocol, rec["metrics"], rec["parties"], rec["fit_s"], rec["wall_s"],
                                     rec["traffic"]["total"]), flush=True)  # fmt: skip
        phases = rec["traffic"]["by_phase"]
        m = rec["metrics"]
        rows.append(
            {
                "protocol": protocol,
                "label": label.format(**opts),
                "auc": m["auc"],
                "ks": m["ks"],
                "precision_at_10pct": m["precision_at_10pct"],
                "lift_at_10pct": m["lift_at_10pct"],
                "bytes": sum(
                    phases.get(p, {}).get("bytes_sent", 0) for p in ("setup", "training", "scoring")
                ),
                "psi_bytes": phases.get("alignment", {}).get("bytes_sent", 0),
                "rounds": rec["traffic"]["total"]["rounds"],
                "fit_s": rec["fit_s"],
                "n_common": rec["n_aligned"],
            }
        )
    print(f"[3/4] scoring service: {N_APPLICATIONS} new loan applications, one at a time ({SERVED} model)")
    served = _serve_applications(out_dir, records[SERVED], bank_csv, platform_csv)
    print("[4/4] writing the report")
    _figure(rows, out_dir / "comparison.png")
    best = records["ss_gbdt"]["parties"]["bank"]
    ranked = sorted(zip(best["scores"], best["test_ids"], best["test_labels"], strict=True), reverse=True)
    with open(out_dir / "shortlist.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "sme_id", "score", "took_up_product"])
        for i, (score, sme, label) in enumerate(ranked[:SHORTLIST_K], 1):
            writer.writerow([i, sme, f"{score:.4f}", label])
    hit_rate = sum(label for _, _, label in ranked[:SHORTLIST_K]) / SHORTLIST_K
    base_rate = sum(label for _, _, label in ranked) / len(ranked)
    (out_dir / "results.json").write_text(json.dumps({"scenario": scenario.__dict__, "rows": rows}, indent=1))
    lines = [
        "# mpc_fl demo: finding SMEs for the bank's financing product",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')}. Synthetic scenario: {n_bank} bank customers, "
        f"{int(0.6 * n_bank)} of them also platform customers, plus {n_bank // 4} platform-only SMEs "
        f"(seed 42). PSI found {rows[0]['n_common']} common SMEs; the bank split them 80/20 with its secret "
        f"split key (the same split for every protocol; the platform learns which rows are test rows, "
        f"which says nothing about the labels).",
        "",
        "| protocol | AUC | KS | precision@10% | lift@10% | bytes sent (train+score) | PSI bytes | rounds | fit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['auc']:.4f} | {r['ks']:.4f} | {r['precision_at_10pct']:.3f} | "
            f"{r['lift_at_10pct']:.2f} | {_fmt_bytes(r['bytes'])} | {_fmt_bytes(r['psi_bytes'])} | {r['rounds']} | "
            f"{r['fit_s']:.1f} |"
        )
    lines += [
        "",
        "![accuracy and communication](comparison.png)",
        "",
        f"## Referral shortlist\n\n`shortlist.csv` holds the {SHORTLIST_K} held-out SMEs the secret-shared GBDT "
        f"scores highest. {hit_rate:.0%} of them took up the product, against a base rate of {base_rate:.0%} "
        f"(lift {hit_rate / base_rate:.1f}x). Only the bank saw these scores.",
        "",
        *_service_section(served),
        "## Who learned what",
        "",
        "- Links: every byte between the bank, the platform and the dealer went over TLS 1.3 with mutual "
        "authentication against the run's federation file (fresh keys per run); nobody on the network saw "
        "any of it, and no other process could take a party's place.",
        "- PSI: each side learned which of its own customers are common, and the size of the other's list.",
        "- Split: the platform learned which common SMEs are test rows; the bank chose them with a keyed hash "
        "of the ids, so this is independent of the labels.",
        "- Secret-shared LR: features, labels, gradients and the model stayed secret-shared; the dealer only "
        "supplied correlated randomness (it saw request sizes and the public batch schedule); the bank alone "
        "learned the scores.",
        f"- Secret-shared GBDT: every party learned which party owns each split, the owner alone its feature, "
        f"bin and threshold; a party that owns every split on the path to a node also knows which SMEs reach "
        f"it: {_reconstructable(records['ss_gbdt'])}. Gradients, histograms, gains and leaf weights stayed "
        f"secret; the bank alone learned the scores.",
        "- HE baselines (OU, 3072-bit): SecureBoost showed the platform which SMEs fall in every tree node; "
        "hetero-LR showed the bank the platform's partial scores for every SME.",
        "- Plaintext: the platform handed its raw data to the bank (the ceiling, not an option).",
    ]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    print(f"\nReport: {report.resolve()}")
    return report
