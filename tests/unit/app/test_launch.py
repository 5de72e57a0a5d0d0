"""The launcher names why a party's process ended: its own error line, or the signal that killed it."""

from __future__ import annotations

import sys

import pytest

from mpc_fl.app.launch import launch
from mpc_fl.runtime.local import PartyFailed


def test_a_party_killed_by_a_signal_is_reported_as_such(tmp_path):
    crash = "import os; print('progress [bank] aligning', flush=True); os.abort()"
    with pytest.raises(PartyFailed) as err:
        launch({"bank": [sys.executable, "-c", crash]}, tmp_path, timeout_s=60)
    assert "killed by SIGABRT" in str(err.value) and "aligning" in str(err.value)


def test_a_party_that_fails_on_its_own_is_reported_by_its_last_line(tmp_path):
    fail = "import sys; print('mpc-fl bank: error: no id column', file=sys.stderr); sys.exit(2)"
    with pytest.raises(PartyFailed) as err:
        launch({"bank": [sys.executable, "-c", fail]}, tmp_path, timeout_s=60)
    assert "no id column" in str(err.value) and "killed" not in str(err.value)
