"""Centralised plaintext baselines over the same transport: providers ship raw features to the bank.

No privacy at all (the bank sees every provider's features); it is the accuracy
ceiling and the cost floor that the secure protocols are measured against, trained
with exactly the same algorithms (:mod:`mpc_fl.models`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mpc_fl.models.gbdt import GBDTParams, PlainGBDT, importance, stack_trees, unstack_trees
from mpc_fl.models.lr import LRParams, PlainLR
from mpc_fl.models.monotone import own_signs, reported
from mpc_fl.protocols.base import BANK, Context, LocalData, VerticalProtocol


class _Centralised(VerticalProtocol):
    threat_model: ClassVar[str] = "none: providers disclose their features to the bank"
    leakage: ClassVar[dict[str, str]] = {
        "bank": "all providers' raw features (and their monotone constraints)",
        "provider": "nothing; with --importance, its own features' importance",
    }

    @staticmethod
    def _collect(ctx: Context, **arrays: np.ndarray) -> list[dict[str, np.ndarray]] | None:
        """Every party's ``arrays`` at the bank (its own first, then the providers' in order); None elsewhere."""
        if ctx.role != BANK:
            ctx.channel.send_arrays(BANK, **arrays)
            return None
        return [arrays] + [ctx.channel.recv_arrays(r) for r in ctx.roles if r != BANK]

    def _gather(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        parts = self._collect(ctx, X=data.X)
        return None if parts is None else np.hstack([p["X"] for p in parts])

    def _make(self, monotone: np.ndarray):  # noqa: ANN202
        raise NotImplementedError

    def __init__(self, params, *, monotone: str = ""):  # noqa: ANN001 - the family's parameters
        self.params, self.monotone = params, monotone

    def fit(self, ctx: Context, data: LocalData) -> None:
        """Each party sends its features and its own monotone constraints; the bank trains on both."""
        signs = own_signs(self.monotone, data)
        self.monotone_ = reported(data.feature_names, signs)
        with ctx.channel.phase("training"):
            parts = self._collect(ctx, X=data.X, monotone=signs)
            if parts is not None:
                joint = np.concatenate([p["monotone"] for p in parts])
                X = np.hstack([p["X"] for p in parts])
                self.widths_ = [p["X"].shape[1] for p in parts]
                self.model_ = self._make(joint).fit(X, data.y)

    def feature_importance(self, ctx: Context) -> dict[str, np.ndarray]:
        """The bank computes every feature's (it holds the whole model) and sends each provider its own."""
        if ctx.role != BANK:
            return ctx.channel.recv_arrays(BANK)
        every = self._importance(self.model_)
        ends = np.cumsum([0, *self.widths_])
        providers = [r for r in ctx.roles if r != BANK]
        for q, r in enumerate(providers, start=1):
            ctx.channel.send_arrays(r, **{k: v[ends[q] : ends[q + 1]] for k, v in every.items()})
        return {k: v[: ends[1]] for k, v in every.items()}

    def _importance(self, model) -> dict[str, np.ndarray]:  # noqa: ANN001
        raise NotImplementedError

    def run_info(self) -> dict:
        """This party's own constraints (the bank also saw the providers': no privacy)."""
        return dict(getattr(self, "monotone_", {}))

    def decision_function(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        with ctx.channel.phase("scoring"):
            X = self._gather(ctx, data)
            return None if X is None else self.model_.decision_function(X)

    def prospect_margins(self, ctx: Context, data: LocalData):  # noqa: ANN201 - an MPCTensor
        """The bank computes the margins from the providers' raw features and shares them (no privacy)."""
        from mpc_fl.crypto.share_math import local_shares

        X = self._gather(ctx, data)
        return local_shares(None if X is None else self.model_.decision_function(X), data.n_rows)

    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The bank keeps the whole model (it saw every raw feature: no privacy); a provider keeps nothing."""
        model = getattr(self, "model_", None)
        return ({}, {}) if model is None else self._export(model)

    def import_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            self.model_ = self._import(meta, arrays)

    def params_dict(self) -> dict:
        return self.params.to_dict()


class CentralisedLR(_Centralised):
    name = "plain_lr"

    def __init__(self, params: LRParams = LRParams(), *, monotone: str = ""):  # noqa: B008
        super().__init__(params, monotone=monotone)

    def _make(self, monotone: np.ndarray) -> PlainLR:
        return PlainLR(self.params, monotone)

    def reason_contributions(
        self, ctx: Context, data: LocalData, membership: np.ndarray, reference: np.ndarray
    ) -> np.ndarray | None:
        """The providers send their features, groupings and references; the bank computes every
        contribution in the clear (no privacy: the reference the secure protocols' reasons meet)."""
        from mpc_fl.models.reasons import lr_contributions

        parts = self._collect(ctx, X=data.X, membership=membership, reference=reference)
        if parts is None:
            return None
        out, start = [], 0
        for p in parts:
            d = p["X"].shape[1]
            out.append(
                lr_contributions(
                    p["X"], self.model_.coef_[start : start + d], p["reference"], p["membership"]
                )
            )
            start += d
        return np.hstack(out)

    def _importance(self, model: PlainLR) -> dict[str, np.ndarray]:
        return {"abs_weight": np.abs(model.coef_)}

    def _export(self, model: PlainLR) -> tuple[dict, dict[str, np.ndarray]]:
        return {"intercept": model.intercept_}, {"coef": model.coef_}

    def _import(self, meta: dict, arrays: dict[str, np.ndarray]) -> PlainLR:
        model = PlainLR(self.params)
        model.coef_, model.intercept_ = arrays["coef"], meta["intercept"]
        return model


class CentralisedGBDT(_Centralised):
    name = "plain_gbdt"

    def __init__(self, params: GBDTParams = GBDTParams(), *, monotone: str = ""):  # noqa: B008
        super().__init__(params, monotone=monotone)

    def _make(self, monotone: np.ndarray) -> PlainGBDT:
        return PlainGBDT(self.params, monotone)

    def reason_contributions(
        self, ctx: Context, data: LocalData, membership: np.ndarray, reference: np.ndarray
    ) -> np.ndarray | None:
        """The providers send their features and groupings; the bank attributes every path in the
        clear (:func:`mpc_fl.models.reasons.tree_contributions`; trees need no reference applicant)."""
        from mpc_fl.models.gbdt import apply_bins
        from mpc_fl.models.reasons import joint_membership, tree_contributions

        parts = self._collect(ctx, X=data.X, membership=membership)
        if parts is None:
            return None
        bins = apply_bins(np.hstack([p["X"] for p in parts]), self.model_.edges_)
        return tree_contributions(
            self.model_.trees_, bins, joint_membership([p["membership"] for p in parts])
        )

    def _importance(self, model: PlainGBDT) -> dict[str, np.ndarray]:
        return importance(model.trees_, sum(self.widths_))

    def _export(self, model: PlainGBDT) -> tuple[dict, dict[str, np.ndarray]]:
        arrays = {f"edges_{j}": e for j, e in enumerate(model.edges_)}
        arrays |= stack_trees(model.trees_)
        return {"n_edges": len(model.edges_), "base_margin": model.base_margin_}, arrays

    def _import(self, meta: dict, arrays: dict[str, np.ndarray]) -> PlainGBDT:
        model = PlainGBDT(self.params)
        model.edges_ = [arrays[f"edges_{j}"] for j in range(int(meta["n_edges"]))]
        model.base_margin_ = meta["base_margin"]
        model.trees_ = unstack_trees(self.params.max_depth, arrays)
        return model
