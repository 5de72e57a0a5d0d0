"""What the secure defaults cost: the PRG's throughput, and encrypted vs cleartext links on the same runs.

``test_prg`` draws CrypTen ring elements from our ChaCha20 PRG and, for comparison only,
the way CrypTen drew them before (torch's MT19937, which the review broke).
``test_links`` runs SS-LR and SS-GBDT on default_credit twice, once over the default
TLS links and once with ``--insecure-cleartext`` (debugging only): the difference is
the price of authenticated encryption in bytes and seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _bench import SPLIT, family, options, record, require_dataset

from mpc_fl.app.local import run_protocol_locally
from mpc_fl.crypto.prg import PRG


def _draw(generator: str, n: int):  # noqa: ANN202
    if generator == "chacha20":
        prg = PRG.fresh()
        return lambda: prg.ring_elements((n,))
    g = torch.Generator().manual_seed(1)  # CrypTen's old draw, measured for comparison only
    return lambda: torch.randint(-(2**63), 2**63 - 1, (n,), generator=g, dtype=torch.long)


@pytest.mark.parametrize("n", [pytest.param(10_000, marks=pytest.mark.smoke), 1_000_000, 10_000_000])
@pytest.mark.parametrize("generator", ["chacha20", "mt19937"])
def test_prg(benchmark, generator, n):
    torch.set_num_threads(1)  # one core, as each party gets
    out = benchmark(_draw(generator, n))
    assert out.shape == (n,) and out.dtype == torch.long
    benchmark.extra_info.update({"case": f"prg_{generator}", "generator": generator, "n_elements": n})
    if benchmark.stats is not None:
        benchmark.extra_info["elements_per_s"] = n / benchmark.stats.stats.median


#: the CrypTen cases (their links carry the most rounds), cut like the network suite's
CASES = ["ss_lr", "ss_gbdt"]
CUT = {"lr": {"n_epochs": 1}, "gbdt": {"n_trees": 2}}


@pytest.mark.parametrize("links", ["tls", "cleartext"])
@pytest.mark.parametrize("case", CASES)
def test_links(benchmark, tmp_path, case, links):
    bank, provider = require_dataset("default_credit")
    run = benchmark.pedantic(
        lambda: run_protocol_locally(
            Path(bank),
            [Path(provider)],
            options(case)[0],
            {**options(case)[1], **CUT[family(case)]},
            tmp_path,
            align="sorted",
            split=SPLIT,
            insecure_cleartext=links == "cleartext",
        ),  # fmt: skip
        rounds=1,
        iterations=1,
    )
    record(benchmark, run)
    benchmark.extra_info.update({"case": f"{case}_{links}", "dataset": "default_credit", "link_mode": links})
