"""Tests for the synthetic SME scenario generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mpc_fl.data import synthetic_sme
from mpc_fl.data.synthetic_sme import (
    BANK_FEATURES,
    PLATFORM_FEATURES,
    SMEScenario,
    generate_sme,
    write_sme_csvs,
)

SMALL = SMEScenario(n_bank=3000, overlap=0.6, n_platform_only=1500, seed=7)


@pytest.fixture(scope="module")
def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_sme(SMALL)


def test_deterministic_by_seed(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    bank, platform = small
    bank2, platform2 = generate_sme(SMALL)
    pd.testing.assert_frame_equal(bank, bank2, check_exact=True)
    pd.testing.assert_frame_equal(platform, platform2, check_exact=True)
    bank3, platform3 = generate_sme(SMEScenario(n_bank=3000, overlap=0.6, n_platform_only=1500, seed=8))
    assert not bank["id"].isin(bank3["id"]).all()
    assert not np.allclose(bank["log_avg_balance"].sort_values(), bank3["log_avg_balance"].sort_values())
    assert not np.allclose(platform["monthly_spend"].sort_values(), platform3["monthly_spend"].sort_values())


def test_columns_and_dtypes(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    bank, platform = small
    assert list(bank.columns) == ["id", "y", *BANK_FEATURES]
    assert list(platform.columns) == ["id", *PLATFORM_FEATURES]
    assert bank["id"].dtype == np.int64 and platform["id"].dtype == np.int64
    assert bank["y"].dtype == np.int64 and set(bank["y"].unique()) <= {0, 1}
    for c in BANK_FEATURES:
        assert bank[c].dtype == np.float64, c
    for c in PLATFORM_FEATURES:
        assert platform[c].dtype == np.float64, c
    assert not bank.isna().any().any() and not platform.isna().any().any()
    assert np.isfinite(bank[list(BANK_FEATURES)].to_numpy()).all()
    assert np.isfinite(platform[list(PLATFORM_FEATURES)].to_numpy()).all()
    assert isinstance(bank.index, pd.RangeIndex) and isinstance(platform.index, pd.RangeIndex)


def test_sizes_ids_and_overlap(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    bank, platform = small
    assert len(bank) == SMALL.n_bank
    assert len(platform) == SMALL.n_overlap + SMALL.n_platform_only
    assert bank["id"].is_unique and platform["id"].is_unique
    shared = np.intersect1d(bank["id"], platform["id"])
    assert abs(len(shared) / len(bank) - SMALL.overlap) < 0.01
    # different, shuffled row orders: rows cannot be matched by position
    assert not bank["id"].is_monotonic_increasing and not platform["id"].is_monotonic_increasing
    in_both = bank["id"][bank["id"].isin(platform["id"])].to_numpy()
    assert not np.array_equal(in_both, platform["id"][platform["id"].isin(bank["id"])].to_numpy())


def test_plausible_marginals(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    bank, platform = small
    rates = [
        "cancellation_rate",
        "late_payment_rate",
        "payment_method_card_share",
        "peak_hour_share",
        "weekend_share",
        "vehicle_mix_van_share",
        "vehicle_mix_truck_share",
    ]
    for c in rates:
        assert platform[c].between(0.0, 1.0).all(), c
    assert (platform["vehicle_mix_van_share"] + platform["vehicle_mix_truck_share"] <= 1.0 + 1e-9).all()
    assert (platform["n_distinct_routes"] <= platform["orders_per_month"]).all()
    assert (platform["monthly_spend"] >= 0).all() and (platform["points_balance"] >= 0).all()
    assert bank["overdraft_days"].between(0, 365).all() and (bank["n_products"] >= 1).all()
    assert (platform["monthly_spend"].median() > 0) and (platform["tenure_months"] >= 1).all()


@pytest.mark.parametrize("label", ["takeup", "default"])
def test_positive_rate(label: str) -> None:
    bank, _ = generate_sme(SMEScenario(n_bank=20000, seed=3, label=label))
    assert 0.10 <= bank["y"].mean() <= 0.25


def test_labels_share_features() -> None:
    a_bank, a_plat = generate_sme(SMEScenario(n_bank=2000, label="takeup"))
    b_bank, b_plat = generate_sme(SMEScenario(n_bank=2000, label="default"))
    pd.testing.assert_frame_equal(a_plat, b_plat)
    pd.testing.assert_frame_equal(a_bank.drop(columns="y"), b_bank.drop(columns="y"))
    assert not a_bank["y"].equals(b_bank["y"])


@pytest.mark.parametrize(("overlap", "n_platform_only"), [(0.0, 50), (1.0, 0), (0.0, 0), (0.37, 1234)])
def test_edge_overlaps(overlap: float, n_platform_only: int) -> None:
    sc = SMEScenario(n_bank=1001, overlap=overlap, n_platform_only=n_platform_only, seed=1)
    bank, platform = generate_sme(sc)
    assert len(bank) == 1001 and len(platform) == sc.n_overlap + n_platform_only
    assert len(np.intersect1d(bank["id"], platform["id"])) == sc.n_overlap
    assert list(platform.columns) == ["id", *PLATFORM_FEATURES]
    assert platform["id"].dtype == np.int64


@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Shrink the universe block so multi-block behaviour is cheap to test."""
    monkeypatch.setattr(synthetic_sme, "BLOCK_SIZE", 1000)
    return 1000


def test_multi_block_exact_counts(tiny_blocks: int) -> None:
    """Several universe blocks (and a short last block) still give exact sizes and unique ids."""
    sc = SMEScenario(n_bank=5 * tiny_blocks + 321, overlap=0.55, n_platform_only=2 * tiny_blocks, seed=5)
    bank, platform = generate_sme(sc)
    assert len(bank) == sc.n_bank and len(platform) == sc.n_platform
    assert bank["id"].is_unique and platform["id"].is_unique
    assert len(np.intersect1d(bank["id"], platform["id"])) == sc.n_overlap


@pytest.mark.parametrize("label", ["takeup", "default"])
def test_write_csvs_matches_generate(tmp_path: Path, label: str) -> None:
    sc = SMEScenario(n_bank=2500, overlap=0.6, n_platform_only=700, seed=11, label=label)
    bank, platform = generate_sme(sc)
    bank_a, plat_a = write_sme_csvs(tmp_path / "a", sc, chunk_rows=333)
    bank_b, plat_b = write_sme_csvs(tmp_path / "b", sc)
    assert bank_a.name == "bank.csv" and plat_a.name == "platform.csv"
    assert bank_a.read_bytes() == bank_b.read_bytes()
    assert plat_a.read_bytes() == plat_b.read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(bank_a), bank, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(plat_a), platform, check_exact=True)
    assert not list(tmp_path.glob("*/*.tmp"))


def test_write_csvs_chunking_across_blocks(tmp_path: Path, tiny_blocks: int) -> None:
    """Byte-identical files, equal to generate_sme, whether chunks are smaller or larger than a block."""
    sc = SMEScenario(n_bank=4 * tiny_blocks + 77, overlap=0.5, n_platform_only=3 * tiny_blocks, seed=9)
    bank, platform = generate_sme(sc)
    outputs = [write_sme_csvs(tmp_path / str(c), sc, chunk_rows=c) for c in (97, 377, tiny_blocks, 100_000)]
    for paths in outputs[1:]:
        for p, q in zip(outputs[0], paths, strict=True):
            assert p.read_bytes() == q.read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(outputs[0][0]), bank, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(outputs[0][1]), platform, check_exact=True)


def test_block_order_is_shuffled(tiny_blocks: int) -> None:
    """Blocks are emitted in a per-table random order, not universe order."""
    sc = SMEScenario(n_bank=20 * tiny_blocks, overlap=1.0, n_platform_only=0, seed=3)
    bank, platform = generate_sme(sc)
    # ids encode the universe block; emitted block sequences differ between tables and from 0..19
    span = synthetic_sme._ID_STRIDE * tiny_blocks
    base = synthetic_sme._plan(sc).id_base
    bank_blocks = ((bank["id"] - base) // span).to_numpy()[::tiny_blocks]
    plat_blocks = ((platform["id"] - base) // span).to_numpy()[::tiny_blocks]
    assert sorted(bank_blocks) == list(range(20)) and sorted(plat_blocks) == list(range(20))
    assert list(bank_blocks) != list(range(20)) and list(bank_blocks) != list(plat_blocks)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"overlap": 1.5},
        {"overlap": -0.1},
        {"overlap": float("nan")},
        {"n_bank": 0},
        {"n_bank": -5},
        {"n_bank": 10.5},
        {"n_platform_only": -1},
        {"seed": -1},
        {"label": "churn"},
    ],
)
def test_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SMEScenario(**kwargs)  # type: ignore[arg-type]


def test_bad_chunk_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        write_sme_csvs(tmp_path, SMEScenario(n_bank=100), chunk_rows=0)


def _auc(x: pd.DataFrame, y: pd.Series, model: object) -> float:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    model.fit(x_tr, y_tr)  # type: ignore[attr-defined]
    return float(roc_auc_score(y_te, model.predict_proba(x_te)[:, 1]))  # type: ignore[attr-defined]


@pytest.mark.parametrize("label", ["takeup", "default"])
def test_gbdt_beats_lr_and_joint_beats_bank(label: str) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("threadpoolctl")
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    bank, platform = generate_sme(SMEScenario(n_bank=16000, overlap=0.65, seed=42, label=label))
    joined = bank.merge(platform, on="id")
    assert len(joined) > 10_000
    joint, bank_only = [*BANK_FEATURES, *PLATFORM_FEATURES], list(BANK_FEATURES)
    y = joined["y"]

    def lr() -> object:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    def gbdt() -> object:
        return HistGradientBoostingClassifier(random_state=0)

    with threadpool_limits(limits=1):  # OpenMP oversubscription on busy machines is 10x slower
        auc_lr = _auc(joined[joint], y, lr())
        auc_gb = _auc(joined[joint], y, gbdt())
        auc_gb_bank = _auc(joined[bank_only], y, gbdt())
        auc_lr_bank = _auc(joined[bank_only], y, lr())
    assert auc_gb - auc_lr >= 0.02, (auc_lr, auc_gb)
    assert auc_gb - auc_gb_bank >= 0.05, (auc_gb_bank, auc_gb)
    assert auc_lr - auc_lr_bank >= 0.03, (auc_lr_bank, auc_lr)
