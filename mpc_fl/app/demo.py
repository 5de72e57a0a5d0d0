"""The main job: the bank-and-platform SME scenario end to end, on synthetic data.

1. The generator writes the bank's and the platform's customer files (partial overlap), and,
   for evaluation only, the truth about the platform-only SMEs (a file no party reads).
2. Joint models: for each protocol the parties start as separate processes, align their common
   SMEs with PSI, train on the same split and score held-out SMEs; only the bank learns scores.
3. The referral campaign: a prospect model (the bank's labels, the platform's features) scores
   the platform's own SMEs that the bank does not know; the platform gets its shortlist (never
   the scores) and refers them; the referred SMEs that want the product apply, the scoring
   service scores their loan applications with the joint model, and one PSI tells the platform
   which referrals converted (its reward points) and the bank which new customers it referred.
4. The report compares secret sharing (CrypTen) with additive HE (OU, FATE/SecretFlow-style)
   and centralised plaintext training, tells the campaign, and says who learned what.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from mpc_fl.app.jobs import RunRecord, ShortlistRecord
from mpc_fl.app.local import (
    LocalService,
    attribute_locally,
    result_line,
    run_protocol_locally,
    shortlist_locally,
)
from mpc_fl.app.serving.decoys import DEFAULT_DECOYS
from mpc_fl.data.synthetic_sme import (
    BANK_FEATURES,
    PLATFORM_GROUPS,
    SMEScenario,
    write_sme_csvs,
    write_truth_csv,
)
from mpc_fl.protocols import case, cases

#: The model the scoring service answers applications with (with its reasons), and how many
#: applications the demo sends. The label is take-up, so a low score is the adverse outcome.
SERVED = "ss_lr"
N_APPLICATIONS = 10
REASONS, ADVERSE = 3, "y0"
#: the platform's name in a reason, and the bank's features in plain words (an adverse-action notice)
PLATFORM_LABEL = "delivery platform data"
PLAIN_WORDS = {
    "account_age_months": "how long the business has banked with us",
    "log_avg_balance": "average account balance",
    "n_products": "number of our products held",
    "overdraft_days": "days overdrawn",
    **{g: f"partner delivery platform: {g}" for g in PLATFORM_GROUPS},
    f"{PLATFORM_LABEL}: other": "partner delivery platform: other activity",
}
#: the campaign: the prospect model's case, its plaintext twin (the reference lift), the list's share
#: of the platform-only SMEs, the loyalty points per referred take-up, and the walk-in applicants
PROSPECT_MODEL, PROSPECT_TWIN = "ss_gbdt", "plain_gbdt"
SHORTLIST_SHARE = 0.05
POINTS_PER_TAKEUP = 500
N_WALK_INS = 20


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


def _reconstructable(record: RunRecord) -> str:
    counts = record.run_info.get("reconstructable_nodes", {})
    return (
        "; ".join(
            f"{role} could reconstruct {c['nodes']} of {c['nodes_total']} non-root nodes "
            f"({c['nodes_leaves']} of them leaves) beyond the {c['public']} every party knows"
            for role, c in counts.items()
        )
        or "not reported"
    )


def _serve_applications(
    out_dir: Path, applicants: list[str], bank_csv: Path, platform_csv: Path
) -> list[dict]:
    """Start the scoring service on the saved joint model and score the applications one at a time."""
    work = out_dir / "service"
    work.mkdir(parents=True, exist_ok=True)
    service = LocalService(out_dir / "models", bank_csv, platform_csv, work, reasons=REASONS, adverse=ADVERSE)
    try:
        rows = []
        for sme in applicants[:N_APPLICATIONS]:
            t0 = time.perf_counter()
            (r,) = service.bank.score(sme)
            ms = 1e3 * (time.perf_counter() - t0)
            rows.append(
                {"sme_id": sme, "score": r.score, "error": r.error, "latency_ms": ms, "reasons": r.reasons}
            )
            why = _reason_text(r.reasons)
            print(
                f"      application {sme}: "
                + (f"score {r.score:.3f}" if r.error is None else r.error)
                + f" in {ms:.1f} ms"
                + (f"; lowered most by {why}" if why else "")
            )
        return rows
    finally:
        service.stop()


def adverse_action_notice(reasons: list[tuple[str, float]]) -> list[str]:
    """The principal reasons in plain words, as a bank's notice states them (strongest first); only
    inputs that did lower the score are reasons."""
    hurt = [name for name, v in reasons if v > 0]
    return [f"{k}. {PLAIN_WORDS.get(name, name)}" for k, name in enumerate(hurt, 1)]


def _reason_text(reasons: list[tuple[str, float]] | None) -> str:
    """The reasons that lowered the score, each with its effect on the log-odds of take-up."""
    sign = -1.0 if ADVERSE == "y0" else 1.0  # contributions come toward the adverse outcome
    return "; ".join(f"{n} ({sign * v:+.2f})" for n, v in reasons or [] if v > 0)


def _importance_section(record: RunRecord) -> list[str]:
    """What drives the served model: the bank's features by name, the platform's as the groups it released."""
    seen = record.parties["bank"].importance
    if not seen:
        return []
    rows = [(name, v, "bank") for name, v in seen["own"]["abs_weight"].items()]
    for role, released in seen.items():
        if role != "own":
            rows += [(name, v, "platform, as released") for name, v in released["abs_weight"].items()]
    lines = [
        "### What drives the served model (feature importance, as the bank sees it)",
        "",
        "|w| on the scaled features: the bank learned its own weights' magnitudes (never their signs, which "
        "stay secret-shared) and the platform's summed over each group it releases; the platform learned "
        "its own features' and nothing of the bank's.",
        "",
        "| input | weight magnitude | whose |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {v:.3f} | {who} |" for name, v, who in sorted(rows, key=lambda r: -r[1])]
    return [*lines, ""]


def _service_section(served: list[dict]) -> list[str]:
    ok = [r["latency_ms"] for r in served if r["error"] is None]
    lines = [
        "### The referred SMEs' loan applications, scored by the service, with their reasons",
        "",
        f"The joint secret-shared LR (step 2; each party keeps its own part) runs as a service with the "
        f"links open; the bank scored {len(served)} of the applications one at a time, with the data each "
        f"applicant handed in, the platform reading its features by id from its own SQLite table. Median latency "
        f"{sorted(ok)[len(ok) // 2] if ok else float('nan'):.1f} ms per application on this machine. Each "
        f"application was sent within its fixed anonymity set of {DEFAULT_DECOYS + 1}+ of the bank's customers, so "
        "the platform learns only that one of them applied, the same set however often it is asked; "
        f"only the bank sees scores. With each score the bank got the {REASONS} inputs that lowered it "
        "most (contributions to the log-odds of take-up against the average training applicant; listed "
        "here only where they did lower it): its own features by "
        "name, the platform's only as the groups the platform chose to release; the contributions were "
        "ranked on secret shares and only these were opened, to the bank.",
        "",
        "| application (SME id) | score | latency ms | principal reasons (effect on the log-odds) |",
        "|---|---:|---:|---|",
    ]
    for r in served:
        score = f"{r['score']:.3f}" if r["error"] is None else r["error"]
        why = _reason_text(r.get("reasons"))
        lines.append(f"| {r['sme_id']} | {score} | {r['latency_ms']:.1f} | {why} |")
    scored = [r for r in served if r["error"] is None and _reason_text(r.get("reasons"))]
    if scored:
        low = min(scored, key=lambda r: r["score"])
        lines += [
            "",
            f"The notice for the lowest-scored application ({low['sme_id']}, score {low['score']:.3f}), "
            "principal reasons in plain words:",
            "",
            *[f"    {line}" for line in adverse_action_notice(low["reasons"])],
        ]
    return [*lines, ""]


def _joint_rows(records: dict[str, RunRecord]) -> list[dict]:
    rows = []
    for name, rec in records.items():
        phases, m = rec.traffic["by_phase"], rec.metrics
        rows.append(
            {
                "protocol": name,
                "label": case(name).label,
                "auc": m["auc"],
                "ks": m["ks"],
                "precision_at_10pct": m["precision_at_10pct"],
                "lift_at_10pct": m["lift_at_10pct"],
                "bytes": sum(
                    phases.get(p, {}).get("bytes_sent", 0) for p in ("setup", "training", "scoring")
                ),
                "psi_bytes": phases.get("alignment", {}).get("bytes_sent", 0),
                "rounds": rec.traffic["total"]["rounds"],
                "fit_s": rec.fit_s,
                "n_common": rec.n_aligned,
            }
        )
    return rows


def shortlist_quality(shortlist_file: Path, truth_csv: Path) -> dict[str, float]:
    """How good a shortlist is among the platform-only SMEs, from the truth no party reads."""
    import pandas as pd

    truth = pd.read_csv(truth_csv, dtype={"id": str}).set_index("id")
    listed = pd.read_csv(shortlist_file, dtype={"id": str})["id"]
    precision, base = float(truth.loc[listed, "y"].mean()), float(truth["y"].mean())
    return {
        "k": len(listed),
        "precision_at_k": precision,
        "random_precision": base,
        "lift_at_k": precision / base,
        "propensity_lift": float(truth.loc[listed, "propensity"].mean() / truth["propensity"].mean()),
    }


def _campaign(out_dir: Path, truth_csv: Path, bank_csv: Path, shortlist_file: Path) -> dict:
    """Simulate the campaign from the truth: who applies, the bank's new data, its take-up list.

    The referred SMEs that would take up the product apply (the truth's ``y``), and so do
    :data:`N_WALK_INS` platform-only SMEs that were never referred; each applicant hands the bank
    its application data, and every applicant takes up the product. Writes what each party then
    holds: the bank its customers plus the applicants, and its list of take-ups.
    """
    import pandas as pd

    truth = pd.read_csv(truth_csv, dtype={"id": str})
    referred = set(pd.read_csv(shortlist_file, dtype={"id": str})["id"])
    converted = truth[truth["id"].isin(referred) & (truth["y"] == 1)]
    walk_ins = truth[~truth["id"].isin(referred) & (truth["y"] == 1)].head(N_WALK_INS)
    applicants = pd.concat([converted, walk_ins])
    bank = pd.read_csv(bank_csv, dtype={"id": str}).drop(columns="y")
    with_applications = out_dir / "campaign" / "bank_with_applications.csv"
    with_applications.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([bank, applicants[["id", *BANK_FEATURES]]]).to_csv(with_applications, index=False)
    takeups = out_dir / "campaign" / "bank_takeups.csv"
    applicants[["id"]].to_csv(takeups, index=False)
    return {
        "applicants": applicants["id"].tolist(),
        "n_referred": len(referred),
        "n_converted": len(converted),
        "n_walk_ins": len(walk_ins),
        "bank_csv": with_applications,
        "takeups": takeups,
    }


def run_demo(out_dir: Path, n_bank: int = 20000, quick: bool = False, quiet: bool = False) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    scenario = SMEScenario(n_bank=n_bank, overlap=0.6, n_platform_only=n_bank // 4, seed=42)
    setting = "smoke" if quick else "default"
    print(
        f"[1/6] generating the synthetic SME scenario: {n_bank} bank customers, 60% also on the platform, "
        f"{scenario.n_platform_only} platform-only SMEs"
    )
    bank_csv, platform_csv = write_sme_csvs(out_dir / "data", scenario)
    groups = out_dir / "data" / "platform_groups.json"  # what the platform releases as reasons
    groups.write_text(json.dumps({g: list(f) for g, f in PLATFORM_GROUPS.items()}, indent=1))
    truth_csv = write_truth_csv(out_dir / "evaluation" / "platform_only_truth.csv", scenario)
    # the bank's secret split key: one split for every protocol, unpredictable to the platform
    split_key = out_dir / "bank-split.key"
    split_key.unlink(missing_ok=True)
    records: dict[str, RunRecord] = {}
    print("[2/6] joint models: every protocol with separate party processes (PSI alignment, same split)")
    plan = cases("demo")
    for i, c in enumerate(plan, 1):
        print(f"  ({i}/{len(plan)}) {c.label}", flush=True)
        rec = run_protocol_locally(
            bank_csv, [platform_csv], c.protocol, c.settings(setting), out_dir / "runs" / c.name,
            split_key=split_key, keep_scores=True, quiet=quiet,
            save_models=out_dir / "models" if c.name == SERVED else None,
            release="group", groups=str(groups), release_label=PLATFORM_LABEL, importance=c.name == SERVED,
        )  # fmt: skip
        records[c.name] = rec
        print("      " + result_line(rec), flush=True)
    rows = _joint_rows(records)

    print("[3/6] prospect models: the bank's labels, the platform's features only (same split)")
    prospect: dict[str, RunRecord] = {}
    for name in (PROSPECT_MODEL, PROSPECT_TWIN):
        c = case(name)
        prospect[name] = run_protocol_locally(
            bank_csv, [platform_csv], c.protocol, c.settings(setting), out_dir / "prospect-runs" / name,
            split_key=split_key, quiet=quiet, save_models=out_dir / "prospect-models" / name, features="providers",
        )  # fmt: skip
        print(f"      {c.label}: " + result_line(prospect[name]).split(" | ")[0], flush=True)

    k = max(1, round(SHORTLIST_SHARE * scenario.n_platform_only))
    print(
        f"[4/6] the platform's shortlist: the top {k} of its SMEs the bank does not know (scores stay secret)"
    )
    lists: dict[str, ShortlistRecord] = {}
    quality: dict[str, dict] = {}
    for name in (PROSPECT_MODEL, PROSPECT_TWIN):
        lists[name] = shortlist_locally(
            platform_csv, out_dir / "prospect-models" / name, out_dir / "shortlists" / name, top_k=k,
            drop_known=True, quiet=quiet,
        )  # fmt: skip
        quality[name] = shortlist_quality(Path(lists[name].shortlist_file), truth_csv)
    q = quality[PROSPECT_MODEL]
    print(
        f"      {lists[PROSPECT_MODEL].n_scored:,} prospects scored, {q['k']} on the list: "
        f"{q['precision_at_k']:.0%} would take up the product, against {q['random_precision']:.0%} at random "
        f"(lift {q['lift_at_k']:.2f}x; plaintext prospect model {quality[PROSPECT_TWIN]['lift_at_k']:.2f}x)"
    )

    shortlist_file = out_dir / "shortlist.csv"  # the platform's list (ids only), where the report says
    shutil.copyfile(lists[PROSPECT_MODEL].shortlist_file, shortlist_file)
    campaign = _campaign(out_dir, truth_csv, bank_csv, shortlist_file)
    print(
        f"[5/6] the campaign: {campaign['n_converted']} referred SMEs and {campaign['n_walk_ins']} walk-ins apply; "
        f"the service scores {min(N_APPLICATIONS, len(campaign['applicants']))} applications ({SERVED} joint model)"
    )
    served = _serve_applications(out_dir, campaign["applicants"], campaign["bank_csv"], platform_csv)

    print("[6/6] attribution: which referrals converted (one PSI of the two lists)")
    attribution = attribute_locally(
        shortlist_file, campaign["takeups"], out_dir / "attribution", points_per_takeup=POINTS_PER_TAKEUP,
        quiet=quiet,
    )  # fmt: skip
    print(
        f"      {attribution.n_matched} referred SMEs took up a product: {attribution.points:,} reward points "
        f"for the platform to award"
    )
    _figure(rows, out_dir / "comparison.png")
    results = {
        "scenario": scenario.__dict__,
        "rows": rows,
        "campaign": {
            "k": k,
            "n_scored": lists[PROSPECT_MODEL].n_scored,
            "quality": quality,
            "prospect_auc": {n: r.metrics.get("auc") for n, r in prospect.items()},
            "shortlist_bytes": lists[PROSPECT_MODEL].traffic["total"]["bytes_sent"],
            "shortlist_s": lists[PROSPECT_MODEL].score_s,
            "n_converted": campaign["n_converted"],
            "n_walk_ins": campaign["n_walk_ins"],
            "n_attributed": attribution.n_matched,
            "points": attribution.points,
        },
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    report = out_dir / "report.md"
    report.write_text("\n".join(_report(scenario, rows, records, results["campaign"], served)) + "\n")
    print(f"\nReport: {report.resolve()}")
    return report


def _report(scenario: SMEScenario, rows: list[dict], records: dict, c: dict, served: list[dict]) -> list[str]:
    n_bank = scenario.n_bank
    q, twin = c["quality"][PROSPECT_MODEL], c["quality"][PROSPECT_TWIN]
    lines = [
        "# mpc_fl demo: finding SMEs for the bank's financing product",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')}. Synthetic scenario: {n_bank} bank customers, "
        f"{scenario.n_overlap} of them also platform customers, plus {scenario.n_platform_only} platform-only "
        f"SMEs (seed 42). PSI found {rows[0]['n_common']} common SMEs; the bank split them 80/20 with its "
        f"secret split key (the same split for every protocol; the platform learns which rows are test rows, "
        f"which says nothing about the labels).",
        "",
        "## Joint models (both parties' features)",
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
        "## The referral campaign",
        "",
        f"A prospect model ({case(PROSPECT_MODEL).label}, trained on the common customers with the bank's "
        f"labels and the platform's features only; test AUC {c['prospect_auc'][PROSPECT_MODEL]:.4f}) scored "
        f"the {c['n_scored']:,} platform customers the bank does not know. The platform passed its whole "
        f"client base with `--drop-known`, so the customers it had learned from PSI to be the bank's were left out. "
        f"The top {c['k']} were chosen on the secret shares: the platform received `shortlist.csv` (ids only), "
        f"the bank only the number {c['k']}. The list cost {_fmt_bytes(c['shortlist_bytes'])} and "
        f"{c['shortlist_s']:.1f} s.",
        "",
        "| shortlist | on the list | would take up | at random | lift |",
        "|---|---:|---:|---:|---:|",
        f"| {case(PROSPECT_MODEL).label} | {q['k']} | {q['precision_at_k']:.1%} | {q['random_precision']:.1%} | "
        f"{q['lift_at_k']:.2f}x |",
        f"| {case(PROSPECT_TWIN).label} (reference) | {twin['k']} | {twin['precision_at_k']:.1%} | "
        f"{twin['random_precision']:.1%} | {twin['lift_at_k']:.2f}x |",
        "",
        '("Would take up" is the generator\'s ground truth, written to `evaluation/` for this report only; no '
        "party reads it.)",
        "",
        f"The platform referred its list. {c['n_converted']} of the referred SMEs applied and took up the "
        f"product, and so did {c['n_walk_ins']} platform-only SMEs that were never referred.",
        "",
        *_service_section(served),
        *_importance_section(records[SERVED]),
        "### Attribution",
        "",
        f"One PSI of the platform's referred list and the bank's take-ups gave the platform the "
        f"{c['n_attributed']} referred SMEs that took up a product ({c['points']:,} loyalty points at "
        f"{POINTS_PER_TAKEUP} each) and the bank the same {c['n_attributed']} of its new customers; the "
        f"{c['n_walk_ins']} walk-ins stay the bank's own, unknown to the platform.",
        "",
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
        "- Prospect model: as its protocol states; the bank contributed labels only. In the prospect model "
        "every split is the platform's, so the platform knows each of its own thresholds.",
        f"- Shortlist: the platform learned which {c['k']} of its SMEs are on the list (and so that the bank's "
        f"model ranks them above the others), never a score; the bank learned how many SMEs the platform "
        f"scored ({c['n_scored']:,}) and K, never an id, a feature or a score of a prospect.",
        "- Loan applications: the platform learned only that one of a fixed anonymity set of "
        f"{DEFAULT_DECOYS + 1}+ bank customers applied; only the bank saw the scores and, per application, "
        f"its {REASONS} reasons: the platform's contributions only as the groups it released, and only where "
        "a group was among them; the platform learned nothing of them.",
        f"- Attribution: each side learned the {c['n_attributed']} matches and the size of the other's list "
        f"({c['k']} referred, {c['n_converted'] + c['n_walk_ins']} take-ups), nothing about the other ids.",
    ]
    return lines
