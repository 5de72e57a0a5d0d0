"""Rebuild every figure and table of the paper from recorded results (``make figures``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SCRIPTS = ["fig_auc", "fig_scaling", "fig_mask", "fig_network", "fig_serving", "tab_results"]


def main() -> None:
    for name in SCRIPTS:
        importlib.import_module(name).main()


if __name__ == "__main__":
    main()
