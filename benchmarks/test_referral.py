"""The referral job measured: the shortlist's lift among the platform-only SMEs, and what it costs.

Per protocol of the "protocols" suite: a prospect model (the bank's labels, the platform's
features; ``--features providers``) trained on the common customers of the synthetic scenario
(20,000 bank customers, 60% on the platform, 5,000 platform-only SMEs; same public split for
every protocol), then the platform's top K (5% of its prospects) chosen on the shares. The lift
is the list's take-up rate over the platform-only SMEs' rate, from the truth the generator
writes (read here only), next to the plaintext prospect model of the same family (same
features, split, hyperparameters and K). ``bytes``, ``rounds`` and ``wall_s`` are the shortlist
run's (all parties and the dealer; ``wall_s`` includes process start and the handshake).

The same models then score 100,000 platform-only SMEs of another draw of the scenario (seed 43):
out of sample for every model, with its own truth. The attribution of 10,000 referred SMEs
against 5,000 take-ups is one more record. ``-m smoke``: a small scenario, SS-LR only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from _bench import SPLIT, family, options, suite

from mpc_fl.app.demo import shortlist_quality
from mpc_fl.app.jobs import ShortlistRecord
from mpc_fl.app.local import attribute_locally, run_protocol_locally, shortlist_locally
from mpc_fl.data.synthetic_sme import SMEScenario, write_sme_csvs, write_truth_csv

SHARE = 0.05
TWIN = {"lr": "plain_lr", "gbdt": "plain_gbdt"}


def _population(root: Path, scenario: SMEScenario) -> dict[str, Path]:
    bank, platform = write_sme_csvs(root, scenario)
    truth = write_truth_csv(root / "truth.csv", scenario)
    only = set(pd.read_csv(truth, dtype={"id": str})["id"])
    frame = pd.read_csv(platform, dtype={"id": str})
    prospects = root / "prospects.csv"
    frame[frame["id"].isin(only)].to_csv(prospects, index=False)
    return {"bank": bank, "platform": platform, "truth": truth, "prospects": prospects}


@pytest.fixture(scope="module")
def sme(tmp_path_factory) -> dict[str, Path]:
    return _population(tmp_path_factory.mktemp("sme"), SMEScenario(20000, 0.6, 5000, seed=42))


@pytest.fixture(scope="module")
def sme_100k(tmp_path_factory) -> dict[str, Path]:
    return _population(tmp_path_factory.mktemp("sme100k"), SMEScenario(1000, 0.0, 100_000, seed=43))


@pytest.fixture(scope="module")
def models(tmp_path_factory, sme) -> Callable[..., Path]:
    """Each case's prospect model, trained once per module (the plaintext twins as well)."""
    done: dict[str, Path] = {}

    def get(name: str, smoke: bool = False) -> Path:
        if name not in done:
            root = tmp_path_factory.mktemp(f"prospect-{name}")
            protocol, opts = options(name, smoke)
            run_protocol_locally(
                sme["bank"], [sme["platform"]], protocol, opts, root / "run", split=SPLIT,
                save_models=root / "models", features="providers",
            )  # fmt: skip
            done[name] = root / "models"
        return done[name]

    return get


def _record(benchmark, name: str, population: str, run: ShortlistRecord, quality: dict, twin: dict) -> None:  # noqa: ANN001
    protocol, opts = options(name)
    benchmark.extra_info.update(
        {
            "case": name,
            "protocol": protocol,
            "params": opts,
            "population": "provider_only",
            "scenario": population,
            "k": quality["k"],
            "lift_at_k": quality["lift_at_k"],
            "precision_at_k": quality["precision_at_k"],
            "random_precision": quality["random_precision"],
            "propensity_lift_at_k": quality["propensity_lift"],
            "plaintext_lift_at_k": twin["lift_at_k"],
            "lift_vs_plaintext": quality["lift_at_k"] / twin["lift_at_k"],
            "bytes": run.traffic["total"]["bytes_sent"],
            "dealer_bytes": run.traffic["total"].get("dealer_bytes", 0),
            "rounds": run.traffic["total"]["rounds"],
            "wall_s": run.wall_s,
            "score_s": run.score_s,
            "n_scored": run.n_scored,
        }
    )


def _shortlist(
    benchmark, tmp_path: Path, models: Path, population: dict[str, Path]
) -> tuple[ShortlistRecord, dict]:  # noqa: ANN001
    n = len(pd.read_csv(population["truth"], usecols=["id"]))
    k = round(SHARE * n)
    run = benchmark.pedantic(
        lambda: shortlist_locally(
            population["prospects"], models, tmp_path / "list", top_k=k, drop_known=True
        ),
        rounds=1,
        iterations=1,
    )
    return run, shortlist_quality(Path(run.shortlist_file), population["truth"])


def _twin_quality(tmp_path: Path, models, name: str, population: dict[str, Path]) -> dict:  # noqa: ANN001
    twin = TWIN[family(name)]
    n = len(pd.read_csv(population["truth"], usecols=["id"]))
    run = shortlist_locally(
        population["prospects"], models(twin), tmp_path / "twin", top_k=round(SHARE * n), drop_known=True
    )
    return shortlist_quality(Path(run.shortlist_file), population["truth"])


@pytest.mark.parametrize("name", suite("protocols"))
def test_shortlist_sme(benchmark, tmp_path, models, sme, name):
    run, quality = _shortlist(benchmark, tmp_path, models(name), sme)
    twin = _twin_quality(tmp_path, models, name, sme)
    _record(benchmark, name, "sme 20000 bank / 5000 platform-only", run, quality, twin)
    assert quality["k"] == round(SHARE * 5000) and quality["lift_at_k"] > 1.0


@pytest.mark.parametrize("name", suite("protocols"))
def test_shortlist_100k(benchmark, tmp_path, models, sme_100k, name):
    run, quality = _shortlist(benchmark, tmp_path, models(name), sme_100k)
    twin = _twin_quality(tmp_path, models, name, sme_100k)
    _record(benchmark, name, "100000 platform-only (seed 43), models of the sme run", run, quality, twin)
    assert run.n_scored == 100_000


def test_attribution_10k(benchmark, tmp_path, sme_100k):
    ids = pd.read_csv(sme_100k["truth"], usecols=["id"], dtype={"id": str})["id"]
    referred, takeups = tmp_path / "referred.csv", tmp_path / "takeups.csv"
    ids.iloc[:10_000].to_frame().to_csv(referred, index=False)
    ids.iloc[8_000:13_000].to_frame().to_csv(takeups, index=False)  # 2,000 of them referred
    run = benchmark.pedantic(
        lambda: attribute_locally(referred, takeups, tmp_path / "attribution", points_per_takeup=500),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(
        {
            "case": "attribution",
            "n_referred": 10_000,
            "n_takeups": 5_000,
            "n_matched": run.n_matched,
            "bytes": run.traffic["total"]["bytes_sent"],
            "rounds": run.traffic["total"]["rounds"],
            "wall_s": run.wall_s,
        }
    )
    assert run.n_matched == 2_000


@pytest.mark.smoke
def test_smoke_shortlist_and_attribution(benchmark, tmp_path):
    population = _population(tmp_path / "data", SMEScenario(1200, 0.6, 400, seed=5))
    protocol, opts = options("ss_lr", smoke=True)
    run_protocol_locally(
        population["bank"], [population["platform"]], protocol, opts, tmp_path / "run", split=SPLIT,
        save_models=tmp_path / "models", features="providers",
    )  # fmt: skip
    run, quality = _shortlist(benchmark, tmp_path, tmp_path / "models", population)
    assert quality["k"] == 20 and run.n_scored == 400
    attribution = attribute_locally(
        Path(run.shortlist_file), population["prospects"], tmp_path / "attribution"
    )
    assert attribution.n_matched == 20
