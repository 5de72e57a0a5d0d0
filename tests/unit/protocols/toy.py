"""A toy protocol for the registry's contract: the bank trains on its own features only.

It exists to show what adding a protocol takes (this module, one registry entry, its tests):
nothing crosses between the parties, so it reveals nothing, and it scores only at the bank.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mpc_fl.models.lr import LRParams, PlainLR
from mpc_fl.protocols.base import BANK, Context, LocalData, VerticalProtocol


class BankOnlyLR(VerticalProtocol):
    name = "bank_only_lr"
    threat_model: ClassVar[str] = "none needed: the parties exchange nothing"
    leakage: ClassVar[dict[str, str]] = {"bank": "nothing of the provider", "provider": "nothing"}

    def __init__(self, params: LRParams = LRParams()):
        self.params = params
        self.model_: PlainLR | None = None

    def fit(self, ctx: Context, data: LocalData) -> None:
        if ctx.role == BANK:
            self.model_ = PlainLR(self.params).fit(data.X, data.y)

    def decision_function(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        return self.model_.decision_function(data.X) if ctx.role == BANK and self.model_ else None

    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        if self.model_ is None:
            return {"trained": False}, {}
        return {"trained": True}, {"coef": self.model_.coef_, "intercept": np.array([self.model_.intercept_])}

    def import_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        if meta["trained"]:
            self.model_ = PlainLR(self.params)
            self.model_.coef_, self.model_.intercept_ = arrays["coef"], float(arrays["intercept"][0])

    def params_dict(self) -> dict:
        return self.params.to_dict()
