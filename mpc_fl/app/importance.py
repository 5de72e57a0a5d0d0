"""Feature importance: each party learns its own features', and the bank a provider's at its release level.

Why here and not in the protocols: what a provider lets the bank see of its features is its
model part's release (:class:`mpc_fl.models.reasons.Release`: each feature by name, named groups,
or one aggregate), the same choice as for reason codes; the protocols compute each party's own
importance (:meth:`mpc_fl.protocols.base.VerticalProtocol.feature_importance`) and know nothing of it.
"""

from __future__ import annotations

import numpy as np

from mpc_fl.models.reasons import Release
from mpc_fl.protocols.base import BANK, Context, VerticalProtocol


def exchange(ctx: Context, proto: VerticalProtocol, feature_names: tuple[str, ...], release: Release) -> dict:
    """``{"own": {kind: {feature: value}}}`` at every party; the bank also gets, per provider role,
    ``{kind: {unit: value}}``: the provider's importance summed over each unit it releases."""
    own = proto.feature_importance(ctx)
    mine = {
        kind: dict(zip(feature_names, np.asarray(v, dtype=float).tolist(), strict=True))
        for kind, v in own.items()
    }
    if ctx.role != BANK:
        units = release.units(feature_names)
        released = {
            kind: dict(
                zip(units.names, (units.membership.T @ np.asarray(v, dtype=float)).tolist(), strict=True)
            )
            for kind, v in own.items()
        }
        ctx.channel.send_json(BANK, released)
        return {"own": mine}
    return {"own": mine, **{r: ctx.channel.recv_json(r) for r in ctx.roles if r != BANK}}
