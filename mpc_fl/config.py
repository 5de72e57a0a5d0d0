"""Project-wide settings: where the benchmark data lives and the fixed evaluation split."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Share of the aligned rows held out for testing, whichever split is drawn (mpc_fl.data.split).
SPLIT_TEST_SIZE = 0.2
#: Public seed of the stratified reference split only (split 'stratified-public', the plaintext
#: baseline; ../shared/docs/plaintext_reference.md). Anyone who knows it can replay that split and
#: read labels off the test mask, so the default 'random' split never uses it.
SPLIT_SEED = 42


def data_root() -> Path:
    """Root of the real benchmark datasets: ``$MPC_FL_DATA``, else ``../shared/data`` beside the repo."""
    env = os.environ.get("MPC_FL_DATA")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()
