"""What a recorded result must carry to be reproducible: commit, versions, machine."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess

from mpc_fl.config import REPO_ROOT

PACKAGES = (
    "mpc_fl", "torch", "crypten", "numpy", "sf-heu", "pynacl", "cryptography", "scikit-learn", "xgboost-cpu", "spu",
)  # fmt: skip


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (also compared in the parties' handshake)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict:
    return {
        "git_commit": _git("rev-parse", "HEAD") or None,
        # the code's state: recorded results and generated paper files do not count
        "git_dirty": bool(
            _git(
                "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results", ":!paper"
            )
        ),
        "versions": versions(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        # benchmarks are recorded on a quiet machine: the load when this record was made shows it
        "load_average": list(os.getloadavg()),
    }
