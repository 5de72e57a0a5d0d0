"""A heavy-tailed credit dataset (public, synthetic): the shape of data that made our LR under-fit.

Why: the SME data and the FATE datasets are fairly tame; a bank's bureau-style data is not.
This generator mimics the "Give Me Some Credit" layout: 10 features whose largest values sit
tens to hundreds of standard deviations out (revolving utilisation, debt ratio, income,
past-due counts with 96/98 sentinel codes), about 7% positives. A plain standardised
mini-batch LR under-fits it badly (0.67 AUC where scikit-learn's lbfgs reaches 0.71);
the LR family's robust scaling (:class:`mpc_fl.data.vertical.RobustScaler`) is tested on it.
Fixed seed: this is public benchmark data, not a secret.
"""

from __future__ import annotations

import numpy as np

from mpc_fl.data.party_table import PartyTable

BANK_FEATURES = ("revolving_utilisation", "age", "late_30_59", "debt_ratio")
PROVIDER_FEATURES = (
    "monthly_income",
    "open_credit_lines",
    "late_90",
    "real_estate_loans",
    "late_60_89",
    "dependents",
)


def heavy_tailed_credit(n: int = 30_000, seed: int = 0) -> tuple[PartyTable, PartyTable]:
    """The bank's table (ids, labels, 4 features) and the provider's (6 features), same ids and order."""
    g = np.random.default_rng(seed)
    util = g.lognormal(-1.2, 1.0, n)
    glitch = g.random(n) < 0.02
    util[glitch] = g.uniform(5, 30_000, glitch.sum())  # data-entry outliers, as in the real data
    age = np.clip(g.normal(52, 15, n), 21, 100).round()
    reliability = g.normal(size=n)  # latent, never published
    late30 = g.poisson(np.exp(-1.5 - 0.8 * reliability))
    late90 = g.poisson(np.exp(-2.5 - 1.0 * reliability))
    late60 = g.poisson(np.exp(-2.3 - 0.9 * reliability))
    codes = g.random(n) < 0.002
    for counts in (late30, late90, late60):
        counts[codes] = g.choice([96, 98], codes.sum())  # bureau sentinel codes
    income = g.lognormal(8.5, 0.9, n).round()
    income[g.random(n) < 0.005] *= 50
    debt = g.lognormal(-1.0, 0.8, n)
    no_income = g.random(n) < 0.15
    debt[no_income] = g.lognormal(7, 1.5, no_income.sum())  # debt over a missing income
    lines, real_estate, dependents = g.poisson(8, n), g.poisson(1, n), g.poisson(0.8, n)
    logit = (
        -2.9
        + 1.6 * np.clip(util, 0, 1.5)
        - 0.025 * (age - 52)
        + 0.45 * np.minimum(late30, 6)
        + 0.7 * np.minimum(late90, 6)
        + 0.55 * np.minimum(late60, 6)
        - 0.35 * (np.log(income) - 8.5)
        + 0.3 * np.minimum(debt, 3)
        - 0.6 * reliability
        + 0.4 * g.normal(size=n)
    )
    y = (g.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    ids = g.choice(10 * n, size=n, replace=False) + 1
    bank = PartyTable(
        "bank", ids, np.c_[util, age, late30, debt].astype(float), BANK_FEATURES, y, "heavy_tailed"
    )
    provider_X = np.c_[income, lines, late90, real_estate, late60, dependents].astype(float)
    provider = PartyTable("provider", ids.copy(), provider_X, PROVIDER_FEATURES, None, "heavy_tailed")
    return bank, provider
