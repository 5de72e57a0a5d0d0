"""Synthetic SME scenario: a bank and an on-demand logistics platform with partly shared customers.

This is the project's built-in default data. It produces two party tables in the same form as
the real data CSVs: the **bank** table (``id``, ``y``, then :data:`BANK_FEATURES`) and the
**platform** table (``id``, then :data:`PLATFORM_FEATURES`). Every feature is a float64 with no
missing values; ``id`` is a unique int64 business id shared by both parties for the same SME.

Population and membership
-------------------------
A universe of ``n_bank + n_platform_only`` SMEs is simulated independently and identically.
``n_bank`` of them are bank customers; ``round(overlap * n_bank)`` of those are also platform
customers, the other bank customers are not; ``n_platform_only`` further SMEs are platform
customers only. Membership is independent of the business itself (no selection effects), so the
overlapping rows are a random sample of the bank's book. Ids are drawn without replacement from
a sparse integer range; both tables are shuffled, each in its own order, so rows cannot be
matched by position, only by id (private set intersection in the protocols).

Latent factors
--------------
Each SME has four standard-normal latent factors, never published:

* ``size``        business size (turnover, headcount);
* ``growth``      recent momentum, ``corr(size, growth) = -0.2`` (small firms grow faster);
* ``reliability`` operational and financial discipline, ``corr(size, reliability) = 0.3``;
* ``heavy``       logistics intensity (wholesale/construction vs. light retail/food).

Business age is lognormal (median about three years), older for larger and more reliable firms.

Observed features
-----------------
Bank (few, coarse):

* ``account_age_months``  business age times Beta(4, 2), at least 1;
* ``log_avg_balance``     log average balance, normal in size and reliability;
* ``n_products``          1 + Poisson, more for larger firms;
* ``overdraft_days``      days in overdraft over 12 months, Poisson-gamma (overdispersed), driven by
  low reliability and high growth, capped at 365.

Platform (rich, behavioural "alternative data"):

* ``orders_per_month``    Poisson with lognormal rate in size and growth;
* ``monthly_spend``       orders times a lognormal order value (heavier goods cost more);
* ``spend_growth_3m``     relative spend change over three months; true growth plus
  measurement noise that shrinks with the number of orders;
* ``vehicle_mix_van_share``, ``vehicle_mix_truck_share``  Dirichlet shares of (bike/car, van,
  truck) whose concentrations follow ``heavy`` and ``size``;
* ``route_spread_km``     lognormal delivery radius; ``n_distinct_routes`` Poisson, at most the
  number of orders;
* ``cancellation_rate``   Beta, mean rises with low reliability and with |growth| (chaos);
* ``late_payment_rate``   zero-inflated Beta; reliable firms are mostly at exactly 0;
* ``payment_method_card_share``  Beta, larger firms pay more by invoice;
* ``tenure_months``       platform tenure (at most 84 months and the business age);
* ``points_balance``      loyalty points: spend times tenure (capped at 24 months) times an
  unredeemed fraction;
* ``peak_hour_share``, ``weekend_share``  Beta, light-goods businesses are peakier.

Labels
------
The label is defined for every bank customer, on or off the platform. For SMEs that are not
platform customers the same behaviour is simulated (they still run their business, the platform
simply never sees it), so the label distribution does not depend on membership; only the
overlapping rows let a model *use* the platform features. With ``sigma(x) = 1 / (1 + e^-x)``,
``s = log(1 + monthly_spend)``, ``[.]`` an indicator and ``u ~ N(0, 1)`` unobserved noise, the
label is ``y ~ Bernoulli(sigma(logit))``, computed from the published (rounded) feature values:

``label="takeup"`` ("took up the bank's SME financing product", positive rate about 19%)::

    logit = -3.05
          + 1.8 * sigma((s - log 1500) / 0.25) * tanh(spend_growth_3m / 0.12)   # growth x size
          + 0.55 * min(((cancellation_rate - 0.06) / 0.035)^2, 5)              # U-shape
          + 1.4 * (1 - exp(-overdraft_days / 6))                                # saturation
          - 1.6 * [account_age_months < 12]                                     # threshold
          - 1.3 * [late_payment_rate > 0.15]                                    # threshold
          + 1.2 * [s - log_avg_balance > -1.0]                                  # liquidity gap
          + 0.15 * (n_products - 1.9)
          + 0.6 * u

Growth only matters for firms above about 1,500 a month of spend (small firms' growth does not
turn into financing demand); both very low cancellation (organised firms planning expansion) and
very high cancellation (stressed firms) raise take-up; the overdraft effect saturates after a
couple of weeks; new accounts and late payers are not offered the product; and firms whose
platform spend is large relative to their bank balance need working capital (a cross-party
interaction neither party sees alone).

``label="default"`` ("defaulted on the SME loan within 12 months"; every bank customer is treated
as a borrower, positive rate about 13%)::

    logit = -4.4
          + 2.0 * (1 - exp(-late_payment_rate / 0.05))                          # saturation
          + 1.0 * [overdraft_days > 30]                                         # threshold
          + 2.2 * [monthly_spend < 400] * min(max(spend_growth_3m - 0.15, 0) / 0.15, 2)
                                                                                # overextension
          + 1.2 * [cancellation_rate > 0.15] * [late_payment_rate > 0]          # interaction
          + 1.2 * [log_avg_balance < 8]                                         # threshold
          + 0.8 * [tenure_months < 6]                                           # threshold
          + 0.8 * u

Any late payment at all is a strong signal (the effect saturates fast); small firms growing fast
overextend themselves; high cancellation only matters for firms that also pay late; a thin
balance and a new platform relationship add risk.

Both labels depend on bank *and* platform features with thresholds, interactions and saturation,
so a joint model beats the bank alone and gradient-boosted trees beat logistic regression.
Features and both labels' noise are drawn whatever ``label`` is, so the two scenarios share the
same feature tables for the same seed.

Determinism and streaming
-------------------------
The universe is generated in fixed blocks of :data:`BLOCK_SIZE` SMEs; block ``b`` draws from its
own generator seeded by ``SeedSequence(seed, spawn_key=(1, b))`` and scenario-wide draws (id
offset, block orders) come from ``SeedSequence(seed, spawn_key=(0,))``. Rows are shuffled within
each block and the blocks are emitted in a per-table random order. Results therefore do not depend
on how output is chunked: :func:`write_sme_csvs` streams block by block with bounded memory and
writes, for any ``chunk_rows``, exactly the tables :func:`generate_sme` returns.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

BANK_FEATURES: tuple[str, ...] = (
    "account_age_months",
    "log_avg_balance",
    "n_products",
    "overdraft_days",
)
PLATFORM_FEATURES: tuple[str, ...] = (
    "orders_per_month",
    "monthly_spend",
    "spend_growth_3m",
    "vehicle_mix_van_share",
    "vehicle_mix_truck_share",
    "route_spread_km",
    "n_distinct_routes",
    "cancellation_rate",
    "late_payment_rate",
    "payment_method_card_share",
    "tenure_months",
    "points_balance",
    "peak_hour_share",
    "weekend_share",
)
#: the platform's named groups of its features, what the demo's platform releases as reasons
PLATFORM_GROUPS: dict[str, tuple[str, ...]] = {
    "delivery activity": (
        "orders_per_month",
        "n_distinct_routes",
        "route_spread_km",
        "peak_hour_share",
        "weekend_share",
    ),
    "spend and growth": ("monthly_spend", "spend_growth_3m", "tenure_months", "points_balance"),
    "fleet mix": ("vehicle_mix_van_share", "vehicle_mix_truck_share"),
    "payment behaviour": ("late_payment_rate", "payment_method_card_share", "cancellation_rate"),
}
LABELS: tuple[str, ...] = ("takeup", "default")
BANK_COLUMNS: tuple[str, ...] = ("id", "y", *BANK_FEATURES)
PLATFORM_COLUMNS: tuple[str, ...] = ("id", *PLATFORM_FEATURES)
TRUTH_COLUMNS: tuple[str, ...] = ("id", "propensity", "y", *BANK_FEATURES)

BLOCK_SIZE = 100_000
"""SMEs per universe block; part of the data definition (changing it changes every table)."""

_ID_STRIDE = 10  # ids per SME slot: block b owns ids [base + b*S*B, base + (b+1)*S*B)
_ID_BASE_RANGE = (100_000_000, 900_000_000)


@dataclass(frozen=True)
class SMEScenario:
    """Parameters of the synthetic SME scenario (validated on construction)."""

    n_bank: int = 20000  # bank customers (rows in bank table)
    overlap: float = 0.6  # fraction of bank customers also on the platform
    n_platform_only: int = 10000  # platform customers who are not bank customers
    seed: int = 42
    label: str = "takeup"  # "takeup" or "default"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` if a parameter is out of range."""
        if not _is_int(self.n_bank) or self.n_bank <= 0:
            raise ValueError(f"n_bank must be a positive integer, got {self.n_bank!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float, np.number)):
            raise ValueError(f"overlap must be a number in [0, 1], got {self.overlap!r}")
        if not (0.0 <= float(self.overlap) <= 1.0):  # also rejects NaN
            raise ValueError(f"overlap must be in [0, 1], got {self.overlap!r}")
        if not _is_int(self.n_platform_only) or self.n_platform_only < 0:
            raise ValueError(f"n_platform_only must be a non-negative integer, got {self.n_platform_only!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.label not in LABELS:
            raise ValueError(f"unknown label {self.label!r}; expected one of {LABELS}")

    @property
    def n_overlap(self) -> int:
        """Bank customers who are also platform customers."""
        return round(float(self.overlap) * int(self.n_bank))

    @property
    def n_platform(self) -> int:
        """Rows in the platform table."""
        return self.n_overlap + int(self.n_platform_only)

    @property
    def n_universe(self) -> int:
        """SMEs simulated (bank or platform customers)."""
        return int(self.n_bank) + int(self.n_platform_only)


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


# ---------------------------------------------------------------------------------------------
# Block generation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Scenario-wide quantities shared by every block."""

    n_blocks: int
    id_base: int
    bank_order: np.ndarray  # block emission order for the bank table
    platform_order: np.ndarray  # block emission order for the platform table


def _plan(sc: SMEScenario) -> _Plan:
    n_blocks = math.ceil(sc.n_universe / BLOCK_SIZE)
    rng = np.random.default_rng(np.random.SeedSequence(sc.seed, spawn_key=(0,)))
    id_base = int(rng.integers(*_ID_BASE_RANGE))
    return _Plan(n_blocks, id_base, rng.permutation(n_blocks), rng.permutation(n_blocks))


def _block_roles(sc: SMEScenario, b: int) -> tuple[int, int, int]:
    """(block length, bank customers, overlap customers) of block ``b``; totals are exact."""
    u = sc.n_universe
    start, end = b * BLOCK_SIZE, min((b + 1) * BLOCK_SIZE, u)
    k0, k1 = start * sc.n_bank // u, end * sc.n_bank // u  # cumulative bank counts
    n_ov = sc.n_overlap
    o0, o1 = k0 * n_ov // sc.n_bank, k1 * n_ov // sc.n_bank  # cumulative overlap among bank
    return end - start, k1 - k0, o1 - o0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _beta_mean(rng: np.random.Generator, mean: np.ndarray, conc: float) -> np.ndarray:
    mean = np.clip(mean, 1e-4, 1 - 1e-4)
    return rng.beta(mean * conc, (1.0 - mean) * conc)


def _simulate(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Simulate ``n`` iid SMEs: rounded features and both labels (fixed draw order)."""
    # latent factors
    z_size = rng.standard_normal(n)
    z_growth = -0.2 * z_size + math.sqrt(1 - 0.2**2) * rng.standard_normal(n)
    z_rel = 0.3 * z_size + math.sqrt(1 - 0.3**2) * rng.standard_normal(n)
    z_heavy = rng.standard_normal(n)
    business_age = np.clip(np.exp(3.6 + 0.35 * z_size + 0.3 * z_rel + 0.6 * rng.standard_normal(n)), 3, 480)

    f: dict[str, np.ndarray] = {}
    # bank
    f["account_age_months"] = np.maximum(1.0, np.round(business_age * rng.beta(4.0, 2.0, n)))
    f["log_avg_balance"] = np.round(9.5 + 0.9 * z_size + 0.35 * z_rel + 0.7 * rng.standard_normal(n), 3)
    f["n_products"] = 1.0 + rng.poisson(np.exp(-0.2 + 0.4 * z_size))
    od_mean = np.exp(1.3 - 0.9 * z_rel - 0.2 * z_size + 0.3 * z_growth)
    f["overdraft_days"] = np.minimum(365.0, rng.poisson(od_mean * rng.gamma(0.8, 1 / 0.8, n)).astype(float))

    # platform
    orders = rng.poisson(np.exp(2.8 + 0.9 * z_size + 0.25 * z_growth + 0.3 * rng.standard_normal(n)))
    f["orders_per_month"] = orders.astype(float)
    order_value = np.exp(3.0 + 0.6 * z_heavy + 0.15 * z_size + 0.25 * rng.standard_normal(n))
    f["monthly_spend"] = np.round(orders * order_value, 2)
    growth_noise = (0.05 + 0.4 / np.sqrt(orders + 1.0)) * rng.standard_normal(n)
    f["spend_growth_3m"] = np.round(np.expm1(0.15 * z_growth + growth_noise), 4)
    alpha = np.stack(
        [
            np.exp(0.8 - 0.8 * z_heavy),
            np.exp(0.5 + 0.2 * z_heavy + 0.1 * z_size),
            np.exp(-0.8 + 0.9 * z_heavy + 0.3 * z_size),
        ]
    )
    g = rng.gamma(alpha)
    shares = g / g.sum(axis=0)
    truck = np.round(shares[2], 4)
    f["vehicle_mix_van_share"] = np.minimum(np.round(shares[1], 4), np.round(1.0 - truck, 4))
    f["vehicle_mix_truck_share"] = truck
    spread = np.exp(1.8 + 0.5 * z_heavy + 0.35 * z_size + 0.5 * rng.standard_normal(n))
    f["route_spread_km"] = np.round(spread, 1)
    route_rate = 0.6 * orders**0.8 * (spread / 6.0) ** 0.3
    f["n_distinct_routes"] = np.minimum(orders, np.maximum(orders > 0, rng.poisson(route_rate))).astype(float)
    canc_mean = _sigmoid(-2.9 - 0.8 * z_rel + 0.4 * np.abs(z_growth))
    f["cancellation_rate"] = np.round(_beta_mean(rng, canc_mean, 30.0), 4)
    late_zero = rng.random(n) < _sigmoid(0.3 + 1.0 * z_rel)
    late = _beta_mean(rng, _sigmoid(-2.4 - 1.0 * z_rel + 0.2 * z_growth - 0.2 * z_size), 15.0)
    f["late_payment_rate"] = np.where(late_zero, 0.0, np.round(late, 4))
    f["payment_method_card_share"] = np.round(_beta_mean(rng, _sigmoid(1.0 - 0.8 * z_size), 8.0), 4)
    tenure = np.maximum(1.0, np.round(np.minimum(business_age, 84.0) * rng.beta(2.0, 1.5, n)))
    f["tenure_months"] = tenure
    unredeemed = rng.beta(1.2, 3.0, n)
    f["points_balance"] = np.round(f["monthly_spend"] * np.minimum(tenure, 24.0) * unredeemed)
    f["peak_hour_share"] = np.round(_beta_mean(rng, _sigmoid(0.2 - 0.5 * z_heavy), 12.0), 4)
    f["weekend_share"] = np.round(_beta_mean(rng, _sigmoid(-1.4 - 0.4 * z_heavy), 15.0), 4)

    for name, col in f.items():  # normalise -0.0 (and make every feature float64)
        f[name] = col.astype(np.float64) + 0.0

    # labels, from the published (rounded) features plus unobserved noise
    u_takeup = rng.standard_normal(n)
    u_default = rng.standard_normal(n)
    v_takeup = rng.random(n)
    v_default = rng.random(n)
    s = np.log1p(f["monthly_spend"])
    logit_t = (
        -3.05
        + 1.8 * _sigmoid((s - math.log(1500.0)) / 0.25) * np.tanh(f["spend_growth_3m"] / 0.12)
        + 0.55 * np.minimum(((f["cancellation_rate"] - 0.06) / 0.035) ** 2, 5.0)
        + 1.4 * (1.0 - np.exp(-f["overdraft_days"] / 6.0))
        - 1.6 * (f["account_age_months"] < 12)
        - 1.3 * (f["late_payment_rate"] > 0.15)
        + 1.2 * (s - f["log_avg_balance"] > -1.0)
        + 0.15 * (f["n_products"] - 1.9)
        + 0.6 * u_takeup
    )
    overextension = np.minimum(np.maximum(f["spend_growth_3m"] - 0.15, 0.0) / 0.15, 2.0)
    logit_d = (
        -4.4
        + 2.0 * (1.0 - np.exp(-f["late_payment_rate"] / 0.05))
        + 1.0 * (f["overdraft_days"] > 30)
        + 2.2 * (f["monthly_spend"] < 400) * overextension
        + 1.2 * (f["cancellation_rate"] > 0.15) * (f["late_payment_rate"] > 0)
        + 1.2 * (f["log_avg_balance"] < 8.0)
        + 0.8 * (f["tenure_months"] < 6)
        + 0.8 * u_default
    )
    f["p_takeup"], f["p_default"] = _sigmoid(logit_t), _sigmoid(logit_d)  # the truth, for evaluation only
    f["y_takeup"] = (v_takeup < f["p_takeup"]).astype(np.int64)
    f["y_default"] = (v_default < f["p_default"]).astype(np.int64)
    return f


def _block_tables(sc: SMEScenario, plan: _Plan, b: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Bank and platform rows of universe block ``b``, each shuffled in its own order, and the truth
    about its platform-only SMEs (in the platform's order)."""
    rng = np.random.default_rng(np.random.SeedSequence(sc.seed, spawn_key=(1, b)))
    n, n_bank, n_ov = _block_roles(sc, b)
    span = _ID_STRIDE * BLOCK_SIZE
    ids = plan.id_base + b * span + rng.choice(span, size=n, replace=False).astype(np.int64)
    f = _simulate(rng, n)
    # SMEs are iid, so roles go by position: [0, n_ov) both, [n_ov, n_bank) bank only, rest platform only
    bank_rows = rng.permutation(n_bank)
    platform_rows = rng.permutation(np.concatenate([np.arange(n_ov), np.arange(n_bank, n)]))

    bank = {"id": ids[bank_rows], "y": f[f"y_{sc.label}"][bank_rows]}
    bank.update({c: f[c][bank_rows] for c in BANK_FEATURES})
    platform = {"id": ids[platform_rows]}
    platform.update({c: f[c][platform_rows] for c in PLATFORM_FEATURES})
    only = platform_rows[platform_rows >= n_bank]
    truth = {"id": ids[only], "propensity": f[f"p_{sc.label}"][only], "y": f[f"y_{sc.label}"][only]}
    truth.update({c: f[c][only] for c in BANK_FEATURES})
    return pd.DataFrame(bank), pd.DataFrame(platform), pd.DataFrame(truth)


def _empty(columns: tuple[str, ...], ints: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: np.empty(0, np.int64 if c in ints else np.float64) for c in columns})


def _iter_table(sc: SMEScenario, which: int) -> Iterator[pd.DataFrame]:
    """Yield the blocks of the bank (``which=0``), platform (1) or truth (2) table in output order."""
    plan = _plan(sc)
    order = plan.bank_order if which == 0 else plan.platform_order
    for b in order:
        df = _block_tables(sc, plan, int(b))[which]
        if len(df):
            yield df


def _concat(parts: list[pd.DataFrame], columns: tuple[str, ...], ints: tuple[str, ...]) -> pd.DataFrame:
    if not parts:
        return _empty(columns, ints)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def generate_sme(scenario: SMEScenario = SMEScenario()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate the (bank, platform) tables of ``scenario`` in memory.

    The bank table has ``id`` (int64), ``y`` (int64, 0/1) and :data:`BANK_FEATURES`; the platform
    table has ``id`` and :data:`PLATFORM_FEATURES` (all features float64, no NaN).
    """
    scenario.validate()
    bank = _concat(list(_iter_table(scenario, 0)), BANK_COLUMNS, ("id", "y"))
    platform = _concat(list(_iter_table(scenario, 1)), PLATFORM_COLUMNS, ("id",))
    return bank, platform


def _write_csv(path: Path, blocks: Iterator[pd.DataFrame], columns: tuple[str, ...], chunk_rows: int) -> None:
    """Stream ``blocks`` to ``path`` in chunks of ``chunk_rows`` rows (via a temporary file)."""
    tmp = path.with_name(path.name + ".tmp")

    def flush(fh: TextIO, parts: list[pd.DataFrame]) -> None:
        df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        for start in range(0, len(df), chunk_rows):
            df.iloc[start : start + chunk_rows].to_csv(fh, header=False, index=False, lineterminator="\n")

    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            fh.write(",".join(columns) + "\n")
            pending: list[pd.DataFrame] = []
            n_pending = 0
            for df in blocks:
                pending.append(df)
                n_pending += len(df)
                if n_pending >= chunk_rows:
                    flush(fh, pending)
                    pending, n_pending = [], 0
            if pending:
                flush(fh, pending)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_sme_csvs(
    out_dir: str | Path, scenario: SMEScenario, *, chunk_rows: int = 200_000
) -> tuple[Path, Path]:
    """Write ``bank.csv`` and ``platform.csv`` for ``scenario`` into ``out_dir``, streaming.

    Memory is bounded by ``max(chunk_rows, BLOCK_SIZE)`` rows; the files are byte-identical for
    every ``chunk_rows`` and read back (``pd.read_csv``) to the frames of :func:`generate_sme`.
    Returns the (bank, platform) paths.
    """
    scenario.validate()
    if not _is_int(chunk_rows) or chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bank_path, platform_path = out / "bank.csv", out / "platform.csv"
    _write_csv(bank_path, _iter_table(scenario, 0), BANK_COLUMNS, chunk_rows)
    _write_csv(platform_path, _iter_table(scenario, 1), PLATFORM_COLUMNS, chunk_rows)
    return bank_path, platform_path


def write_truth_csv(path: str | Path, scenario: SMEScenario, *, chunk_rows: int = 200_000) -> Path:
    """Write the ground truth of the platform-only SMEs (:data:`TRUTH_COLUMNS`) to ``path``.

    For evaluation and simulation only: ``propensity`` is the true probability of the scenario's
    label, ``y`` its draw (would take up the product if offered / would default), and the bank
    features are what the SME would hand the bank with an application (the bank has none of them
    before). No party reads this file; it belongs beside the party files, never in one of them.
    """
    scenario.validate()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(out, _iter_table(scenario, 2), TRUTH_COLUMNS, chunk_rows)
    return out
