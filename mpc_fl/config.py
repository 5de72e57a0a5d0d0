"""Project-wide settings: where the benchmark data lives and the fixed evaluation split."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The fixed split used by every protocol and baseline (see ../shared/docs/plaintext_reference.md).
SPLIT_TEST_SIZE = 0.2
SPLIT_SEED = 42


def data_root() -> Path:
    """Root of the real benchmark datasets: ``$MPC_FL_DATA``, else ``../shared/data`` beside the repo."""
    env = os.environ.get("MPC_FL_DATA")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()
