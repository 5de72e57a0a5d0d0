"""SS-GBDT at 1,000,000 training rows, depth 4: time per tree and peak memory per party, both modes.

The scaling suite runs every protocol with depth-3 trees so that all of them fit at every size;
this suite is the reference setting's depth (4) at a million synthetic SME rows (the bank's 80%
share of 1,250,000 common customers), a few trees, in the default and the oblivious mode.
"""

from __future__ import annotations

import pytest
from _bench import GBDT, SPLIT, record

from mpc_fl.app.local import run_protocol_locally

N_BANK = 1_250_000
MODES = {"ss_gbdt": False, "ss_gbdt_oblivious": True}


@pytest.mark.heavy
@pytest.mark.parametrize("case", list(MODES))
def test_ss_gbdt_million_rows_depth_4(benchmark, tmp_path_factory, tmp_path, case):
    from mpc_fl.data.synthetic_sme import SMEScenario, write_sme_csvs

    out = tmp_path_factory.mktemp("sme_million")
    bank, platform = write_sme_csvs(out, SMEScenario(n_bank=N_BANK, overlap=1.0, n_platform_only=0, seed=42))
    opts = {**GBDT, "n_trees": 3, "max_depth": 4, "mask": "fixed", "oblivious": MODES[case]}
    run = benchmark.pedantic(
        lambda: run_protocol_locally(
            bank, [platform], "ss_gbdt", opts, tmp_path, align="sorted", split=SPLIT
        ),
        rounds=1,
        iterations=1,
    )
    record(benchmark, run)
    benchmark.extra_info.update({"case": case, "dataset": "sme", "n_bank": N_BANK})
