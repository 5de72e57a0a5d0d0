"""Private set intersection: align the parties' common customers without revealing the rest.

:mod:`~mpc_fl.psi.align` is the entry point (``--align``); the PSI protocols live in
:mod:`~mpc_fl.psi.ecdh` and :mod:`~mpc_fl.psi.ot`.
"""
