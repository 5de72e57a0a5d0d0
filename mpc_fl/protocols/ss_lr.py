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

Monotone constraints (``monotone``, party-local: each party names only its own features) are
projected on shares: each party inputs 0/1 indicators ``pos`` (sign +1) and ``neg`` (sign -1) over
its own weights once, and after every step ``s = [w >= 0]`` (one batched sign test over all
weights) gives ``w' = w + pos (s w - w) - neg (s w)``: ``max(w, 0)`` where ``pos``, ``min(w, 0)``
where ``neg`` (bit-times-value products, exact). Whether to run it is decided once by opening
``[some party constrains a weight]`` (a comparison of the shared count, so not which party, nor
how many); that bit, and the larger dealer requests it implies, is all anyone learns of another
party's constraints. Cost per step on the online path: six rounds for the sign test and two
product rounds, ~84 bytes per weight and party (283 bits for the sign, 48 bytes for three products).

Algorithm: exactly :class:`mpc_fl.models.lr.PlainLR` (same batches, step, sigmoid).
Cost: with ``mask="fixed"`` each party's feature matrix is masked and opened once
(:mod:`mpc_fl.crypto.fixed_mask`); every later product opens only the batch-sized
vector. ``mask="generic"`` keeps CrypTen's Beaver matmul (re-masks the batch matrix
every time) so the gain can be measured.

Rounds: with two parties, the fixed mask and a sigmoid built from sign tests and products
("poly", the default; "hard"; "taylor1"), training runs on the online engine
(:mod:`mpc_fl.crypto.online`): the dealer sends every correlation the whole schedule will
consume in one reply before training, and an iteration is then only openings: one for the
forward products, eight for the batched sign test ``[z >= 4], [z < -4]``, three for the
powers of the degree-5 polynomial, one for the selection, one for the gradient products
(14 rounds; CrypTen's exact sigmoid took ~135). What the dealer learns is unchanged: the
sizes and the public batch schedule. "exact", the generic mask and three or more parties use
CrypTen's operations (their comparisons go through :mod:`mpc_fl.crypto.compare`).
"""

from __future__ import annotations

from mpc_fl.crypto.secure_crypten import crypten

# isort: split

from typing import ClassVar

import numpy as np
import torch
from crypten.mpc import MPCTensor

from mpc_fl.crypto import share_math
from mpc_fl.crypto.dealer import DEALER_THREAT_MODEL
from mpc_fl.crypto.fixed_mask import FixedMaskMatrix
from mpc_fl.crypto.online import SCALE_BITS, TwoParty, plan_msb, plan_mul
from mpc_fl.crypto.preprocessing import Plan, fetch
from mpc_fl.models.lr import POLY_BOUND, POLY_COEFFICIENTS, POLY_DEGREE, LRParams, n_iterations, schedule
from mpc_fl.models.monotone import own_signs, reported
from mpc_fl.protocols.base import Context, LocalData, VerticalProtocol

MASKS = ("fixed", "generic")
#: iterations whose preprocessing the dealer sends in one reply (bounds what a party holds)
PLAN_BLOCK = 64
#: Standardised features beyond this magnitude make truncation wraps non-negligible.
MAX_ABS_FEATURE = 256.0
#: Fractional bits of the fixed feature matrices (vectors use CrypTen's 16): a product
#: carries 2^(16+12) before truncation, so a wrap needs |x^T r| ~ 2^35.
FEATURE_PRECISION = 12


def _check_range(ctx: Context, X: np.ndarray, rows: str) -> None:
    """Refuse features whose fixed-point products could wrap, in training and scoring rows alike."""
    if np.abs(X).max(initial=0.0) > MAX_ABS_FEATURE:
        raise ValueError(
            f"{ctx.role}: {rows} features reach |x| = {np.abs(X).max():.0f} > {MAX_ABS_FEATURE:.0f} after "
            f"standardisation; clip outliers so fixed-point products cannot wrap"
        )


def mpc_sigmoid(z, method: str):  # noqa: ANN001, ANN201 - MPCTensor in and out
    """The sigmoid of :func:`mpc_fl.models.lr.sigmoid` with CrypTen's operations (any number of parties)."""
    if method == "exact":
        return z.sigmoid()
    if method == "poly":
        u = z * (1.0 / POLY_BOUND)
        u2 = u * u
        p, term = u * float(POLY_COEFFICIENTS[0]) + 0.5, u
        for c in POLY_COEFFICIENTS[1:]:
            term = term * u2
            p = p + term * float(c)
        hi, lo = (z - POLY_BOUND) > 0, (z + POLY_BOUND) < 0
        return hi + (1 - hi - lo) * p
    t = z * 0.25 + 0.5
    if method == "taylor1":
        return t
    if method == "hard":
        both = crypten.stack([t, t - 1.0]).relu()  # one batched comparison
        return both[0] - both[1]
    raise ValueError(f"unknown sigmoid {method!r}")


def _fixed(x: float) -> int:
    """A public real number as a fixed-point integer at CrypTen's scale."""
    return int(round(x * (1 << SCALE_BITS)))


#: sigmoids the two-party online path computes (sign tests and products only)
ONLINE_SIGMOIDS = ("poly", "hard", "taylor1")


def _sigmoid_shape(method: str) -> tuple[float, bool]:
    """(bound, polynomial?): the sigmoid is clipped to 0 and 1 beyond +-bound."""
    return (POLY_BOUND, True) if method == "poly" else (2.0, False)  # hard: 0.5 + z/4 reaches 1 at z = 2


def plan_sigmoid(plan: Plan, n: int, method: str) -> None:
    """What :func:`two_party_sigmoid` of ``n`` values consumes."""
    if method == "taylor1":
        return
    plan_msb(plan, 2 * n)
    if _sigmoid_shape(method)[1]:
        for step in _POWER_STEPS:
            for _ in step:
                plan_mul(plan, n)
    plan_mul(plan, n)


def power_steps(degree: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Rounds of products giving the odd powers u^3..u^degree from u: each round multiplies powers
    already known (degree 7: u^2; u^3, u^4; u^5, u^7: three rounds)."""
    have, steps = {1}, []
    need = set(range(3, degree + 1, 2))
    while not need <= have:
        new = {}
        for t in sorted(need - have):
            i = next((i for i in sorted(have) if t - i in have), None)
            if i is not None:
                new[t] = (i, t - i)
        top = max(have)
        if 2 * top < degree:
            new[2 * top] = (top, top)  # the next doubling, for the powers beyond it
        steps.append(tuple(new.values()))
        have |= set(new)
    return tuple(steps)


_POWER_STEPS = power_steps(POLY_DEGREE)


def two_party_sigmoid(eng: TwoParty, z: torch.Tensor, method: str) -> torch.Tensor:
    """Shares of sigmoid(z) at CrypTen's scale (see :data:`mpc_fl.models.lr.SIGMOID_METHODS`).

    One batched sign test gives [z >= B] and [z < -B] (six rounds), the polynomial in
    u = z / B takes three rounds of products, and one more product selects it inside the range.
    """
    one = 1 << SCALE_BITS
    mine = eng.rank == 0  # public constants are added by party 0 only
    if method == "taylor1":
        return z.div(4, rounding_mode="trunc") + (one // 2 if mine else 0)
    bound, polynomial = _sigmoid_shape(method)
    B = _fixed(bound) if mine else 0
    n = z.numel()
    below = eng.msb(torch.cat([z - B, z + B]))  # [z < B], [z < -B]
    hi = (1 if mine else 0) - below[:n]
    mid = (1 if mine else 0) - hi - below[n:]
    if polynomial:
        powers = {1: eng.trunc(z * _fixed(1.0 / bound))}
        for step in _POWER_STEPS:
            out = eng.mul([(powers[i], powers[j]) for i, j in step])
            powers.update({i + j: v for (i, j), v in zip(step, out, strict=True)})
        curve = sum(eng.trunc(powers[2 * k + 1] * _fixed(c)) for k, c in enumerate(POLY_COEFFICIENTS))
    else:
        curve = z.div(4, rounding_mode="trunc")
    curve = curve + (one // 2 if mine else 0)
    (inside,) = eng.mul([(mid, curve)], trunc_bits=0)  # a 0/1 integer times a fixed-point value
    return hi * one + inside


def plan_projection(plan: Plan, n: int) -> None:
    """What :func:`two_party_projection` of ``n`` weights consumes."""
    plan_msb(plan, n)
    for _ in range(3):
        plan_mul(plan, n)


def two_party_projection(
    eng: TwoParty, w: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """Shares of ``w`` projected onto the signs ``pos``/``neg`` mark (0/1 shares): eight rounds.

    A sign test (six rounds) gives ``s = [w >= 0]``, one product ``s w`` (= relu(w)), one round of
    two products selects it; 0/1 times fixed point, so no truncation and the result is exact.
    """
    s = (1 if eng.rank == 0 else 0) - eng.msb(w)
    (relu,) = eng.mul([(s, w)], trunc_bits=0)
    up, down = eng.mul([(pos, relu - w), (neg, relu)], trunc_bits=0)
    return w + up - down


def mpc_projection(w: MPCTensor, pos: MPCTensor, neg: MPCTensor) -> MPCTensor:
    """:func:`two_party_projection` with CrypTen's comparison and batched products (any number of parties)."""
    s = w >= 0  # exact 0/1 at precision 0
    (relu,) = share_math.products([(s, w)])
    up, down = share_math.products([(pos, relu - w), (neg, relu)])
    return w + up - down


def sign_indicators(rank: int, signs: np.ndarray, widths: list[int]) -> tuple[MPCTensor, MPCTensor] | None:
    """Shares of 0/1 vectors over every party's weights (rank order): ``pos`` marks the weights
    constrained to ``>= 0``, ``neg`` those ``<= 0``; None when no party constrains any.

    Each party inputs its own part (random shares to the others). Only ``[count > 0]`` is opened,
    to every party: the OR of the parties' flags, not which party or how many weights.
    """
    parts = []
    for q, d_q in enumerate(widths):
        mine = torch.from_numpy(np.stack([signs > 0, signs < 0])).long() if q == rank else torch.zeros(2, d_q)
        parts.append(crypten.cryptensor(mine, src=q, precision=0))
    both = crypten.cat(parts, dim=1)
    if not int((both.sum() >= 1).get_plain_text().item()):
        return None
    return both[0], both[1]


class SecretSharedLR(VerticalProtocol):
    name = "ss_lr"

    uses_crypten = True
    threat_model: ClassVar[str] = DEALER_THREAT_MODEL
    leakage: ClassVar[dict[str, str]] = {
        "bank": "test scores; its own weights and the intercept only if reveal_model; whether some party "
        "has monotone constraints (one bit, not which party or which features); with --importance, |w| of "
        "its own features",
        "provider": "public sizes and the batch schedule; its own weights only if reveal_model; whether some "
        "party has monotone constraints (one bit); with --importance, |w| of its own features",
        "dealer": "request sizes and the public batch schedule (the rows of each mini-batch); from the sizes, "
        "whether some party has monotone constraints",
    }

    def __init__(
        self,
        params: LRParams = LRParams(),
        *,
        mask: str = "fixed",
        reveal_model: bool = False,
        monotone: str = "",
    ):
        self.params, self.mask, self.reveal_model = params, mask, reveal_model
        #: party-local (this party's own features only): not in params_dict, never sent
        self.monotone = monotone

    def params_dict(self) -> dict:
        return {**self.params.to_dict(), "mask": self.mask, "reveal_model": self.reveal_model}

    def feature_importance(self, ctx: Context) -> dict[str, np.ndarray]:
        """``|w_j|`` of each party's own weights, opened to it alone (one batched sign test: the signs
        stay secret); the weights themselves stay shared unless ``reveal_model``."""
        self._restore()
        magnitudes = crypten.cat(self.w_).abs()
        ends = np.cumsum([0, *[len(w) for w in self.w_]])
        own = None
        for q in range(len(self.w_)):
            opened = magnitudes[int(ends[q]) : int(ends[q + 1])].get_plain_text(dst=q)
            if q == ctx.rank:
                own = opened
        return {"abs_weight": own.double().numpy()}

    def run_info(self) -> dict:
        """This party's own monotone constraints (the others never see them)."""
        return dict(getattr(self, "monotone_", {}))

    def _features(self, ctx: Context, X: np.ndarray) -> list:
        """One fixed-mask matrix (or CrypTen tensor) per party, in rank order."""
        comm = crypten.communicator.get()
        rank = ctx.rank
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
        signs = own_signs(self.monotone, data)  # a bad name fails here, before any traffic
        self.monotone_ = reported(data.feature_names, signs)
        with ctx.channel.phase("setup"):
            mats, widths = self._features(ctx, data.X)
            bounds = sign_indicators(ctx.rank, signs, widths)
            n = data.n_rows
            y = torch.from_numpy(data.y).float() if data.y is not None else torch.zeros(n)
            ey = crypten.cryptensor(y, src=0)
            self.w_ = [crypten.cryptensor(torch.zeros(d_p)) for d_p in widths]
            self.b_ = crypten.cryptensor(torch.zeros(1))
        if self._two_party_online(ctx):
            self._fit_two_party(ctx, mats, ey, n, bounds)
        else:
            self._fit_crypten(ctx, mats, ey, n, bounds)
        if self.mask == "fixed":
            for m in mats:
                m.release()
        if self.reveal_model:
            rank = ctx.rank
            own = [w.get_plain_text(dst=i) for i, w in enumerate(self.w_)]
            bias = self.b_.get_plain_text(dst=0)
            self.coef_ = own[rank].double().numpy()
            self.intercept_ = float(bias) if rank == 0 else None

    def _two_party_online(self, ctx: Context) -> bool:
        """The lean path: two parties, fixed masks, a sigmoid built from sign tests and products."""
        return len(ctx.roles) == 2 and self.mask == "fixed" and self.params.sigmoid in ONLINE_SIGMOIDS

    def _fit_two_party(
        self, ctx: Context, mats: list, ey: MPCTensor, n: int, bounds: tuple[MPCTensor, MPCTensor] | None
    ) -> None:
        """The dealer's correlated randomness in one request per block of iterations, then only openings.

        Per iteration: one opening for every party's forward product, the sigmoid's rounds
        (:func:`two_party_sigmoid`), one opening for every party's gradient product. Blocks of
        :data:`PLAN_BLOCK` iterations bound the memory the preprocessing holds at any time (a
        million rows run thousands of iterations); the first block is fetched during set-up.
        With ``bounds`` (the sign indicators), each step ends with :func:`two_party_projection`.
        """
        p = self.params
        comm = crypten.communicator.get()
        shapes = {m.key: m.shape for m in mats}
        batches = [torch.from_numpy(rows) for rows in schedule(n, p)]
        widths = [m.shape[1] for m in mats]
        n_weights = sum(widths)
        pos, neg = (bounds[0].share, bounds[1].share) if bounds is not None else (None, None)

        def preprocess(block: list[torch.Tensor]) -> TwoParty:
            plan = Plan()
            for rows in block:
                r = plan.add_rows(rows.numpy())
                for m in mats:
                    plan.add("matvec", m.key, r)
                plan_sigmoid(plan, len(rows), p.sigmoid)
                for m in mats:
                    plan.add("tmatvec", m.key, r)
                if bounds is not None:
                    plan_projection(plan, n_weights)
            return TwoParty(fetch(plan, shapes), ctx.rank, comm)

        with ctx.channel.phase("setup"):
            eng = preprocess(batches[:PLAN_BLOCK])
        y = ey.share
        w = [torch.zeros(m.shape[1], dtype=torch.long) for m in mats]
        b = torch.zeros(1, dtype=torch.long)
        with ctx.channel.phase("training"), ctx.progress.task("training", len(batches), "iteration") as tick:
            for i, rows in enumerate(batches):
                if i and i % PLAN_BLOCK == 0:
                    eng = preprocess(batches[i : i + PLAN_BLOCK])
                fwd = [eng.pre.take("matvec") for _ in mats]
                opened = eng.open(*[w_q - bq for w_q, (bq, _) in zip(w, fwd, strict=True)])
                z = b.clone()
                for m, f, (bq, cq) in zip(mats, opened, fwd, strict=True):
                    z = z + eng.trunc(m.combine("matmul", f, bq, cq, rows), m.precision)
                residual = two_party_sigmoid(eng, z, p.sigmoid) - y[rows]
                bwd = [eng.pre.take("tmatvec") for _ in mats]
                opened = eng.open(*[residual - bq for bq, _ in bwd])
                step = _fixed(p.learning_rate / len(rows))
                for q, (m, g, (bq, cq)) in enumerate(zip(mats, opened, bwd, strict=True)):
                    grad = eng.trunc(m.combine("t_matmul", g, bq, cq, rows), m.precision)
                    if p.l2:
                        grad = grad + eng.trunc(w[q] * _fixed(p.l2 * len(rows)))
                    w[q] = w[q] - eng.trunc(grad * step)
                if bounds is not None:
                    w = list(torch.split(two_party_projection(eng, torch.cat(w), pos, neg), widths))
                b = b - eng.trunc(residual.sum().view(1) * step)
                tick()
        self.w_ = [MPCTensor.from_shares(w_q, precision=SCALE_BITS) for w_q in w]
        self.b_ = MPCTensor.from_shares(b, precision=SCALE_BITS)

    def _fit_crypten(
        self, ctx: Context, mats: list, ey: MPCTensor, n: int, bounds: tuple[MPCTensor, MPCTensor] | None
    ) -> None:
        """Every product and sigmoid with CrypTen's own operations (any number of parties, any mask)."""
        p = self.params
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
                if bounds is not None:
                    self.w_ = self._split(mpc_projection(crypten.cat(self.w_), *bounds))
                self.b_ = self.b_ - residual.sum() * step
                tick()

    def _split(self, w: MPCTensor) -> list[MPCTensor]:
        """The concatenated weights back into one tensor per party (the widths of ``self.w_``)."""
        out, start = [], 0
        for w_q in self.w_:
            d_q = w_q.size(0)
            out.append(w[start : start + d_q])
            start += d_q
        return out

    def decision_function(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        with ctx.channel.phase("scoring"):
            z = self.prospect_margins(ctx, data).get_plain_text(dst=0)  # only the bank learns the logits
        return z.double().numpy().ravel() if ctx.rank == 0 else None

    def prospect_margins(self, ctx: Context, data: LocalData) -> MPCTensor:
        """The shared logits ``sum_q X_q [w_q] + [b]`` of ``data``'s rows (each party inputs its own columns)."""
        _check_range(ctx, data.X, "scoring")
        self._restore()
        mats = []
        for p, w in enumerate(self.w_):
            shape = (data.n_rows, w.size(0))
            mine = torch.from_numpy(data.X).float() if p == ctx.rank else torch.zeros(shape)
            mats.append(crypten.cryptensor(mine, src=p))
        return self._logits(mats, None)

    def reason_contributions(
        self, ctx: Context, data: LocalData, membership: np.ndarray, reference: np.ndarray
    ) -> MPCTensor:
        """Shares of ``((X_q - ref_q) * [w_q]) @ A_q`` per party ``q``: its own rows' deviations and
        grouping ``A_q`` (private inputs), times the shared weights; two product rounds, nothing opened.

        The grouping enters as a shared input of public shape, so the other parties learn only how
        many units each party has.
        """
        from mpc_fl.crypto.reasons import unit_counts

        _check_range(ctx, data.X - reference, "scoring")
        self._restore()
        counts = unit_counts(ctx.rank, membership.shape[1])
        n = data.n_rows
        deviations, groupings = [], []
        for q, w in enumerate(self.w_):
            shape = (n, w.size(0)), (w.size(0), counts[q])
            mine = q == ctx.rank
            D = torch.from_numpy(data.X - reference) if mine else torch.zeros(shape[0])
            A = torch.from_numpy(membership) if mine else torch.zeros(shape[1])
            deviations.append(crypten.cryptensor(D.double(), src=q))
            groupings.append(crypten.cryptensor(A.double(), src=q))
        weighted = share_math.products(list(zip(deviations, self.w_, strict=True)))
        return crypten.cat([p.matmul(A) for p, A in zip(weighted, groupings, strict=True)], dim=1)

    # ------------------------------------------------------------------ saved model
    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """This party's shares of every party's weights and of the intercept (random to anyone else)."""
        self._restore()
        arrays = {f"w_share_{q}": w.share.numpy().copy() for q, w in enumerate(self.w_)}
        arrays["b_share"] = self.b_.share.numpy().copy()
        meta = {"precision": share_math.precision(self.b_), "widths": [int(w.size(0)) for w in self.w_]}
        return meta, arrays

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
