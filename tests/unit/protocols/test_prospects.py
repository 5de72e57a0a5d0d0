"""Every case trains a prospect model (the bank gives labels, no features) and scores prospects on shares.

``prospect_margins`` must be the margins the protocol's own scoring gives (opened here, at the
bank, only to compare; the shortlist never opens them), for every registered case.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mpc_fl.protocols import cases
from tests.budget import budget_s

#: fixed-point encoding of the shares (2^-16) and the CrypTen protocols' truncations
TOLERANCE = 1e-3


@pytest.mark.parametrize("name", [c.name for c in cases("smoke")])
def test_prospect_margins_are_the_protocols_margins_on_shares(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.protocols.prospects_run", name],
        capture_output=True, text=True, timeout=budget_s(120, processes=3),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    bank, provider = out["bank"], out["provider"]
    assert provider == {"decision": None, "prospect": None}  # nothing is opened to the provider
    decision, prospect = np.array(bank["decision"]), np.array(bank["prospect"])
    assert decision.shape == prospect.shape == (60,)
    assert np.std(decision) > 0.05, "the prospect model learned nothing from the provider's features"
    np.testing.assert_allclose(prospect, decision, atol=TOLERANCE, err_msg=name)
