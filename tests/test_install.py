"""The environment is what the Makefile says: `pip check` complains only of the known, unused requirements.

crypten 0.4.1 and spu 0.9.5 are installed with ``--no-deps``: their metadata asks for packages
mpc_fl never imports (crypten: sklearn, torchvision, tensorboard, future; spu: its JAX
front-end) and spu pins numpy < 2. Anything else `pip check` reports is a real conflict.
"""

from __future__ import annotations

import re
import subprocess
import sys

#: (package, what its metadata asks for that is knowingly not met)
KNOWN = {
    ("crypten", "future"), ("crypten", "sklearn"), ("crypten", "tensorboard"), ("crypten", "torchvision"),
    ("spu", "cachetools"), ("spu", "jax"), ("spu", "multiprocess"), ("spu", "termcolor"), ("spu", "numpy"),
}  # fmt: skip
_LINE = re.compile(r"^(\S+) \S+ (?:requires (\S+?),|has requirement ([A-Za-z0-9_.-]+))")


def unexpected(report: str) -> list[str]:
    """The lines of a `pip check` report that are not one of the known exceptions."""
    out = []
    for line in report.strip().splitlines():
        m = _LINE.match(line)
        if line.startswith("No broken requirements"):
            continue
        if m is None or (m.group(1).lower(), (m.group(2) or m.group(3)).lower()) not in KNOWN:
            out.append(line)
    return out


def test_pip_check_reports_only_the_known_unused_requirements():
    report = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True).stdout
    assert unexpected(report) == [], report


def test_an_unknown_conflict_is_flagged():
    """Positive control: a real conflict must not pass as a known one."""
    assert unexpected("pandas 2.2.0 has requirement numpy<2, but you have numpy 2.4.6.") != []
    assert unexpected("spu 0.9.5 requires jax, which is not installed.") == []
