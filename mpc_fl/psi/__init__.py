"""Private set intersection: align the parties' common customers without revealing the rest."""

from mpc_fl.psi.ecdh import PSIResult, run_psi

__all__ = ["PSIResult", "run_psi"]
