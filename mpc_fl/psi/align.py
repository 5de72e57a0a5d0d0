"""Alignment: each party's rows of the customers common to all parties, in the same order everywhere.

``psi`` (RR22), ``ecdh`` and ``kkrt`` reveal to each party only the set sizes and the
intersection (see :mod:`mpc_fl.psi.ecdh`, :mod:`mpc_fl.psi.ot`); ``sorted`` is for files that
already hold the same ids, checked by comparing a hash of the id lists. The bank intersects with
each provider and tells every provider which of its common rows are common to *all* parties.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from mpc_fl.data.errors import DataError
from mpc_fl.runtime.roles import BANK

if TYPE_CHECKING:  # (the CLI reads ALIGNMENTS for its help: no pandas at import)
    from mpc_fl.data.party_table import PartyTable
    from mpc_fl.protocols.base import Context
    from mpc_fl.psi.ecdh import PSIResult
    from mpc_fl.runtime.channel import Channel

#: "psi" is RR22, the fastest PSI here; "ecdh" and "kkrt" reveal the same.
ALIGNMENTS = ("psi", "ecdh", "kkrt", "sorted")
ALIGN_HELP = (
    "how the parties find their common customers: psi = RR22 OT-based PSI (default, fastest), "
    "ecdh = ECDH-PSI, kkrt = KKRT OT-based PSI (all three reveal only the set sizes and the "
    "intersection); sorted = the files already hold the same ids (checked by hash)"
)


def intersect(ch: Channel, ids: np.ndarray, peer: str, method: str, progress: bool = False) -> np.ndarray:
    """Positions of this party's rows common with ``peer``, in the order both parties agree on."""
    return private_intersection(ch, ids, peer, method, progress).indices


def private_intersection(
    ch: Channel, ids: np.ndarray, peer: str, method: str, progress: bool = False
) -> PSIResult:
    """Both sides' PSI output: the common rows' positions and the two set sizes."""
    if method == "ecdh":
        from mpc_fl.psi.ecdh import run_psi

        return run_psi(ch, ids, peer, progress=progress)
    from mpc_fl.psi.ot import run_ot_psi

    return run_ot_psi(ch, ids, peer, protocol="kkrt" if method == "kkrt" else "rr22")


def id_sort_key(ids: np.ndarray) -> np.ndarray:
    """Order ids numerically when they are numbers, else as strings; identical at every party."""
    text = np.array([str(i) for i in ids])
    try:
        return np.argsort(text.astype(np.int64), kind="stable")
    except ValueError:
        return np.argsort(text, kind="stable")


def align(ctx: Context, table: PartyTable, method: str = "psi", *, progress: bool = False) -> PartyTable:
    """This party's rows of the customers common to all parties, in id order."""
    if method not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {method!r}; choose from {ALIGNMENTS}")
    ch = ctx.channel
    with ch.phase("alignment"):
        if method == "sorted":
            mine = table.take(id_sort_key(table.ids))
            digest = hashlib.sha256("\n".join(map(str, mine.ids)).encode()).hexdigest()
            peers = [r for r in ctx.roles if r != ctx.role]
            for r in peers:
                ch.send_json(r, digest)
            differ = [r for r in peers if ch.recv_json(r) != digest]
            if differ:
                raise DataError(
                    f"{ctx.role}: alignment 'sorted' needs identical id lists, but {', '.join(differ)} has "
                    f"another list (this party has {mine.n_rows:,} ids); use --align psi"
                )
            return mine
        if ctx.role != BANK:
            common = intersect(ch, table.ids, BANK, method, progress)
            keep = ch.recv_arrays(BANK)["keep"]  # positions of the all-party intersection
            rows = common[keep]
        else:
            rows = np.arange(table.n_rows)
            providers = [r for r in ctx.roles if r != BANK]
            pairwise = {r: intersect(ch, table.ids, r, method, progress) for r in providers}
            common = set(range(table.n_rows))
            for idx in pairwise.values():
                common &= set(idx.tolist())
            for r, idx in pairwise.items():
                ch.send_arrays(r, keep=np.flatnonzero(np.isin(idx, list(common))))
            rows = np.array(sorted(common), dtype=np.int64)
        if len(rows) == 0:
            raise DataError(f"{ctx.role}: the parties have no customers in common")
        sub = table.take(rows)
        return sub.take(id_sort_key(sub.ids))
