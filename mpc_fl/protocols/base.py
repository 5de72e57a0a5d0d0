"""The one interface every vertical protocol implements, secure or not.

A protocol object is constructed with hyperparameters only; ``fit`` and
``predict_proba`` are called by every party with that party's own view of the
aligned rows. Scores come back only at the bank (the label holder); other parties
get ``None``. Protocols talk only through ``ctx.channel`` (and CrypTen, whose
traffic the same ledger counts).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from mpc_fl.runtime.channel import Channel
from mpc_fl.runtime.progress import Progress
from mpc_fl.runtime.roles import BANK

if TYPE_CHECKING:  # (CrypTen is loaded only by the protocols and jobs that compute on shares)
    from crypten.mpc import MPCTensor


class Context(Protocol):
    """What a protocol may know about the run: its role and rank, the parties, its channel, its progress."""

    role: str
    channel: Channel

    @property
    def rank(self) -> int:
        """This party's index in :attr:`roles` (the bank is 0), which is also its CrypTen rank."""
        ...

    @property
    def progress(self) -> Progress: ...

    @property
    def roles(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class LocalData:
    """One party's aligned rows: its own (scaled) features, and labels at the bank only."""

    X: np.ndarray
    y: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]


class VerticalProtocol(ABC):
    """Train on vertically split data; score so that only the bank learns the scores."""

    name: ClassVar[str]
    uses_crypten: ClassVar[bool] = False
    #: who is trusted for what (one line, precise)
    threat_model: ClassVar[str]
    #: what each party learns beyond its own input and output
    leakage: ClassVar[dict[str, str]]

    #: version of what a party keeps of a trained model (:meth:`export_state`); bump it when that
    #: changes, so parts saved by another version are refused instead of misread
    model_version: ClassVar[int] = 1

    @abstractmethod
    def fit(self, ctx: Context, data: LocalData) -> None: ...

    @abstractmethod
    def decision_function(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        """The joint logits (margins) of ``data``'s rows, at the bank only; ``None`` at every other party.

        Scoring stops at the logit: the bank applies the sigmoid itself, so no sigmoid runs
        under encryption.
        """

    def prospect_margins(self, ctx: Context, data: LocalData) -> MPCTensor:
        """Secret-shared margins of rows that only the providers hold, opened to nobody.

        For a prospect model (trained with the bank's labels and no bank features): the bank's
        ``data`` has the rows' count and no columns, since a prospect is not its customer. Every
        party gets its CrypTen share; :mod:`mpc_fl.crypto.shortlist` chooses from them. Needs a
        CrypTen session with the dealer, whatever the protocol's own threat model.
        """
        raise NotImplementedError(f"{self.name} does not score prospects")

    def reason_contributions(
        self, ctx: Context, data: LocalData, membership: np.ndarray, reference: np.ndarray
    ) -> MPCTensor | np.ndarray | None:
        """Each row's contribution to its margin per reason unit, against a reference applicant.

        Every party passes its own units' ``membership`` (``(d_p, G_p)`` 0/1 over its features,
        :class:`mpc_fl.models.reasons.Units`) and its ``reference`` row (``(d_p,)``, scaled like
        ``data.X``); the result is ``(n, sum_p G_p)``, the parties' units in rank order. A protocol
        that computes on secrets returns every party's shares (nothing opened: the ranking of
        :mod:`mpc_fl.crypto.reasons` opens the top R to the bank); a plaintext one returns the
        values at the bank and ``None`` elsewhere.
        """
        raise NotImplementedError(f"{self.name} gives no reason codes yet")

    def predict_proba(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        """Probability of y = 1 at the bank (the logistic of :meth:`decision_function`)."""
        z = self.decision_function(ctx, data)
        return None if z is None else 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))

    @abstractmethod
    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """This party's part of the trained model: JSON-able facts and plain arrays, nothing of another party's data."""

    @abstractmethod
    def import_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Restore this party's part (from :meth:`export_state`), ready to score."""

    def params_dict(self) -> dict:
        return {}

    @property
    def scaling(self) -> str:
        """How each party scales its own features before training (``mpc_fl.data.vertical.SCALINGS``).

        The LR family's hyperparameters choose it (``LRParams.scaling``, default "robust"); trees
        are invariant to it and take "standard".
        """
        return getattr(getattr(self, "params", None), "scaling", "standard")

    def run_info(self) -> dict:
        """Protocol-specific facts a run reports next to its scores (e.g. measured leakage); {} if none."""
        return {}

    def feature_importance(self, ctx: Context) -> dict[str, np.ndarray]:
        """After ``fit``: this party's own features' importance, per kind (trees: ``gain``, the total
        gain of the splits on each feature, and ``splits``, their count; LR: ``abs_weight``), known to
        this party alone. Every party calls it together (it may communicate). What a provider
        releases of it to the bank is its model part's release level, the application's business."""
        raise NotImplementedError(f"{self.name} gives no feature importance")


def two_party_peer(ctx: Context, protocol: str) -> str:
    """The other party of a bank + one provider protocol; a clear error for any other federation."""
    roles = tuple(ctx.roles)
    if len(roles) != 2 or BANK not in roles:
        raise ValueError(f"{protocol} is a two-party protocol (bank + one provider); got parties {roles}")
    return next(r for r in roles if r != ctx.role)
