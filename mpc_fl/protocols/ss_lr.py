"""Secret-shared logistic regression on CrypTen arithmetic shares (2 or 3 parties).

Threat model: semi-honest parties; Beaver triples and fixed-mask correlations come
from a separate dealer process (CrypTen's TTP) that colludes with no party; all
randomness from 256-bit ChaCha20 keys (:mod:`mpc_fl.crypto.secure_crypten`), all
links authenticated and encrypted. Without a dealer CrypTen falls back to TFP, where
the bank generates all triples and can unmask everything: allowed only with the
explicit, insecure ``--insecure-tfp`` flag.

What each party learns: the bank learns the test scores (and, only with
``reveal_model``, its own weights and the intercept); each provider learns nothing
but public sizes (rows, its own feature count, the others' feature counts, the
number of iterations and the batch schedule) and, with ``reveal_model``, its own
weights. Features, labels, gradients and the model stay secret-shared. The dealer
learns the request sizes and the rows of each mini-batch (the batch schedule, which
is public: it depends only on the row count and the public seed).

Algorithm: exactly :class:`mpc_fl.models.lr.PlainLR` (same batches, step, sigmoid).
Cost: with ``mask="fixed"`` each party's feature matrix is masked and opened once
(:mod:`mpc_fl.crypto.fixed_mask`); every later product opens only the batch-sized
vector. ``mask="generic"`` keeps CrypTen's Beaver matmul (re-masks the batch matrix
every time) so the gain can be measured.
"""

from __future__ import annotations

from mpc_fl.crypto.secure_crypten import crypten

# isort: split

from typing import ClassVar

import numpy as np
import torch
from crypten.mpc import MPCTensor

from mpc_fl.crypto.dealer import DEALER_THREAT_MODEL
from mpc_fl.crypto.fixed_mask import FixedMaskMatrix
from mpc_fl.models.lr import LRParams, n_iterations, schedule
from mpc_fl.protocols.base import Context, LocalData, VerticalProtocol

MASKS = ("fixed", "generic")
#: Standardised features beyond this magnitude make truncation wraps non-negligible.
MAX_ABS_FEATURE = 256.0
#: Fractional bits of the fixed feature matrices (vectors use CrypTen's 16): a product
#: carries 2^(16+12) before truncation, so a wrap needs |x^T r| ~ 2^35.
FEATURE_PRECISION = 12


def _precision(x: MPCTensor) -> int:
    return x._tensor.encoder.scale.bit_length() - 1


def _check_range(ctx: Context, X: np.ndarray, rows: str) -> None:
    """Refuse features whose fixed-point products could wrap, in training and scoring rows alike."""
    if np.abs(X).max(initial=0.0) > MAX_ABS_FEATURE:
        raise ValueError(
            f"{ctx.role}: {rows} features reach |x| = {np.abs(X).max():.0f} > {MAX_ABS_FEATURE:.0f} after "
            f"standardisation; clip outliers so fixed-point products cannot wrap"
        )


def mpc_sigmoid(z, method: str):  # noqa: ANN001, ANN201 - MPCTensor in and out
    """The sigmoid of :func:`mpc_fl.models.lr.sigmoid`, computed on shares."""
    if method == "exact":
        return z.sigmoid()
    t = z * 0.25 + 0.5
    if method == "taylor1":
        return t
    if method == "hard":
        both = crypten.stack([t, t - 1.0]).relu()  # one batched comparison
        return both[0] - both[1]
    raise ValueError(f"unknown sigmoid {method!r}")


class SecretSharedLR(VerticalProtocol):
    name = "ss_lr"
    scaling = "robust"
    uses_crypten = True
    threat_model: ClassVar[str] = DEALER_THREAT_MODEL
    leakage: ClassVar[dict[str, str]] = {
        "bank": "test scores; its own weights and the intercept only if reveal_model",
        "provider": "public sizes and the batch schedule; its own weights only if reveal_model",
        "dealer": "request sizes and the public batch schedule (the rows of each mini-batch)",
    }

    def __init__(self, params: LRParams = LRParams(), *, mask: str = "fixed", reveal_model: bool = False):
        self.params, self.mask, self.reveal_model = params, mask, reveal_model

    def params_dict(self) -> dict:
        return {**self.params.to_dict(), "mask": self.mask, "reveal_model": self.reveal_model}

    def _features(self, ctx: Context, X: np.ndarray) -> list:
        """One fixed-mask matrix (or CrypTen tensor) per party, in rank order."""
        comm = crypten.communicator.get()
        rank = comm.get_rank()
        _check_range(ctx, X, "training")
        widths = torch.zeros(len(ctx.roles), dtype=torch.long)
        widths[rank] = X.shape[1]
        widths = comm.all_reduce(widths).tolist()  # feature counts are public
        mats = []
        for p, d_p in enumerate(widths):
            mine = torch.from_numpy(X).double() if p == rank else None
            if self.mask == "fixed":
                mats.append(
                    FixedMaskMatrix(mine, owner=p, shape=(X.shape[0], d_p), precision=FEATURE_PRECISION)
                )
            else:
                shape = (X.shape[0], d_p)
                mats.append(
                    crypten.cryptensor(mine.float() if mine is not None else torch.zeros(shape), src=p)
                )
        return mats, widths

    def _logits(self, mats: list, rows: torch.Tensor | None):  # noqa: ANN202
        z = None
        for m, w in zip(mats, self.w_, strict=True):
            if isinstance(m, FixedMaskMatrix):
                part = m.matmul(w, rows)
            else:
                part = (m if rows is None else m[rows]).matmul(w)
            z = part if z is None else z + part
        return z + self.b_

    def fit(self, ctx: Context, data: LocalData) -> None:
        p = self.params
        p.validate()
        if self.mask not in MASKS:
            raise ValueError(f"unknown mask {self.mask!r}; choose from {MASKS}")
        with ctx.channel.phase("setup"):
            mats, widths = self._features(ctx, data.X)
            n = data.n_rows
            y = torch.from_numpy(data.y).float() if data.y is not None else torch.zeros(n)
            ey = crypten.cryptensor(y, src=0)
            self.w_ = [crypten.cryptensor(torch.zeros(d_p)) for d_p in widths]
            self.b_ = crypten.cryptensor(torch.zeros(1))
        with (
            ctx.channel.phase("training"),
            ctx.progress.task("training", n_iterations(n, p), "iteration") as tick,
        ):
            for batch in schedule(n, p):
                rows = torch.from_numpy(batch)
                residual = mpc_sigmoid(self._logits(mats, rows), p.sigmoid) - ey[rows]
                step = p.learning_rate / len(batch)
                for i, m in enumerate(mats):
                    grad = (
                        m.t_matmul(residual, rows)
                        if isinstance(m, FixedMaskMatrix)
                        else m[rows].t().matmul(residual)
                    )
                    if p.l2:
                        grad = grad + self.w_[i] * (p.l2 * len(batch))
                    self.w_[i] = self.w_[i] - grad * step
                self.b_ = self.b_ - residual.sum() * step
                tick()
        if self.mask == "fixed":
            for m in mats:
                m.release()
        if self.reveal_model:
            rank = crypten.communicator.get().get_rank()
            own = [w.get_plain_text(dst=i) for i, w in enumerate(self.w_)]
            bias = self.b_.get_plain_text(dst=0)
            self.coef_ = own[rank].double().numpy()
            self.intercept_ = float(bias) if rank == 0 else None

    def decision_function(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        with ctx.channel.phase("scoring"):
            comm = crypten.communicator.get()
            rank = comm.get_rank()
            _check_range(ctx, data.X, "scoring")
            self._restore()
            mats = []
            for p, w in enumerate(self.w_):
                shape = (data.n_rows, w.size(0))
                mine = torch.from_numpy(data.X).float() if p == rank else torch.zeros(shape)
                mats.append(crypten.cryptensor(mine, src=p))
            z = self._logits(mats, None).get_plain_text(dst=0)  # only the bank learns the logits
        return z.double().numpy().ravel() if rank == 0 else None

    # ------------------------------------------------------------------ saved model
    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """This party's shares of every party's weights and of the intercept (random to anyone else)."""
        self._restore()
        arrays = {f"w_share_{q}": w._tensor.share.numpy().copy() for q, w in enumerate(self.w_)}
        arrays["b_share"] = self.b_._tensor.share.numpy().copy()
        return {"precision": _precision(self.b_), "widths": [int(w.size(0)) for w in self.w_]}, arrays

    def import_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        self._saved = (
            int(meta["precision"]),
            [arrays[f"w_share_{q}"] for q in range(len(meta["widths"]))],
            arrays["b_share"],
        )

    def _restore(self) -> None:
        """Turn saved shares back into CrypTen tensors (needs the party to have joined the federation)."""
        saved = getattr(self, "_saved", None)
        if saved is None:
            return
        precision, w_shares, b_share = saved
        self.w_ = [MPCTensor.from_shares(torch.from_numpy(s.copy()), precision=precision) for s in w_shares]
        self.b_ = MPCTensor.from_shares(torch.from_numpy(b_share.copy()), precision=precision)
        self._saved = None
