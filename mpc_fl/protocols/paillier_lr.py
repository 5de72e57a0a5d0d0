"""Hetero-LR on additive HE without a third-party arbiter (FATE/SecretFlow-style baseline), two parties.

Protocol ("bank encrypts residuals, provider returns masked encrypted gradients"; the two-party,
coordinator-free variant of FATE's hetero-LR, cf. Yang et al. 2019, without the Taylor sigmoid):

* setup: the bank (label holder) generates a key pair of the run's ``scheme`` (HEU ``OU`` by default, or
  ``ZPaillier``; ``key_bits``, 0 for the scheme's default: OU 3072, ZPaillier 2048; keys below
  :data:`~mpc_fl.crypto.paillier.MIN_KEY_BITS` = 2048 bits are refused) and sends the public key; the provider
  refuses a received key that is shorter or of another scheme, and tells the bank how wide its masked
  gradients are (public: it follows from sizes and the features' magnitude). Both parties refuse a batch schedule with a mini-batch
  of at most ``d_p`` rows (see the leakage below). The provider encodes its features once in fixed point
  (``FEATURE_FRAC_BITS``).
* per mini-batch (the schedule of :func:`mpc_fl.models.lr.minibatches`, public):

  1. the provider sends its partial logits ``u_p = X_p[rows] w_p`` in plaintext;
  2. the bank computes ``z = X_b[rows] w_b + b + u_p`` and the residual ``d = sigmoid(z) - y`` with the
     params' sigmoid in plaintext (exactly :class:`~mpc_fl.models.lr.PlainLR`), updates ``w_b`` and ``b``
     itself, encodes ``d`` in fixed point (``RESIDUAL_FRAC_BITS``), encrypts it with fresh randomness and
     sends ``[[d]]``;
  3. the provider computes ``[[X_p[rows]^T d]]`` homomorphically (``matmul_plain``: the bucket method,
     ciphertext additions only; the plaintext multipliers are its own fixed-point features, shifted to be
     non-negative inside the backend) and adds a fresh random mask ``r`` (``MASK_BITS`` statistical
     security bits above the gradient's range), re-randomises the result (adds a fresh ``[[0]]``) and sends
     ``[[g_p + r]]``;
  4. the bank decrypts, checks the value lies in the announced range (it returns plaintexts of ciphertexts
     the provider built: under OU an overflowed one would reveal a multiple of the secret p, see
     :mod:`mpc_fl.crypto.paillier`), and returns ``g_p + r``; the provider removes ``r`` and updates ``w_p``
     (including its own L2 term).

* monotone constraints (``monotone``, party-local): each party projects its own weights onto its own
  signs after each of its steps (:func:`~mpc_fl.models.lr.project_signs`, as
  :class:`~mpc_fl.models.lr.PlainLR` does), in plaintext; nothing about them is sent.
* scoring: the provider sends its partial scores ``X_p w_p`` for the test rows; only the bank adds its part
  and learns the probabilities.

Threat model: semi-honest bank and provider, no third party; OU (p-subgroup / factoring n = p^2 q) or Paillier
(DCRA) keys of at least 2048 bits (security per size: :data:`mpc_fl.crypto.paillier.SCHEMES`). Both schemes
reveal the same things; OU is faster and smaller per ciphertext. The range check also holds against a
provider that sends crafted ciphertexts.

What each party learns beyond its own inputs and outputs:

* bank: the provider's partial logits ``u_p = X_p w_p`` for every training row of every batch (and for every
  test row at scoring), i.e. the full logit ``z``; the masked gradients ``g_p + r`` (statistically hiding
  ``g_p``, 2^-MASK_BITS); the number of provider features; its own weights and intercept. Of the provider's
  monotone constraints nothing beyond what those partial logits show (the provider projects locally). The returned
  ciphertext is re-randomised, so it carries nothing beyond that masked value: without it, ``[[g_p + r]]`` is a
  deterministic function of the bank's own ``[[d]]`` (whose randomness the bank knows) and ``X_p``, which the
  bank could test guesses of the provider's features against.
* provider: the exact gradient ``X_p[rows]^T d`` of its own features for every batch (hence its own
  weights ``w_p``); public sizes and the batch schedule. It sees the residuals only encrypted, but each batch's
  gradient is ``d_p`` exact linear equations in that batch's residuals ``d = sigmoid(z) - y``, whose signs are
  the labels (and of the bank's monotone constraints nothing beyond what they show): with ``b <= d_p`` rows (and ``X_p[rows]`` of rank ``b``) the provider solves for ``d`` outright.
  Such schedules are refused (:func:`check_batch_schedule`), including a short last batch ``n % batch_size``
  of an epoch; the schedule is shared with :class:`~mpc_fl.models.lr.PlainLR`, so it is refused rather than
  changed, and the error names batch sizes that work. Batches only slightly larger than ``d_p`` still leave a
  low-dimensional solution space: use ``batch_size`` much larger than ``d_p``.
"""

from __future__ import annotations

import secrets
import time
from typing import ClassVar

import numpy as np

from mpc_fl.crypto.paillier import (
    DEFAULT_SCHEME,
    HeuBackend,
    check_he_options,
    check_range,
    encode_fixed,
    resolve_key_bits,
)
from mpc_fl.models.lr import LRParams, n_iterations, project_signs, schedule, sigmoid
from mpc_fl.models.monotone import own_signs, reported
from mpc_fl.protocols.base import BANK, Context, LocalData, VerticalProtocol, two_party_peer
from mpc_fl.runtime.ledger import Traffic

#: fixed-point fraction bits of the provider's features (the ct x pt multipliers: keep them narrow)
FEATURE_FRAC_BITS = 16
#: fixed-point fraction bits of the encrypted residuals
RESIDUAL_FRAC_BITS = 24
#: statistical security of the additive gradient mask
MASK_BITS = 40


def _schedule_ok(n_rows: int, batch_size: int, d_p: int) -> bool:
    """Every mini-batch of :func:`~mpc_fl.models.lr.minibatches` has more than ``d_p`` rows."""
    tail = n_rows % batch_size
    return min(batch_size, n_rows) > d_p and (tail == 0 or tail > d_p)


def check_batch_schedule(n_rows: int, batch_size: int, n_provider_features: int) -> None:
    """Refuse a schedule with a mini-batch of ``<= d_p`` rows: ``X_p^T d`` would reveal ``d`` (hence the labels).

    Refused, not repaired: merging a short tail batch would break the schedule shared with PlainLR.
    """
    n, bs, d_p = int(n_rows), int(batch_size), int(n_provider_features)
    if _schedule_ok(n, bs, d_p):
        return
    if n <= d_p:
        raise ValueError(
            f"Paillier LR needs more training rows than provider features (n_rows={n}, {d_p} provider "
            "features): any mini-batch would let the provider solve its gradient for the residuals (the labels)"
        )
    tail = n % bs
    where = (
        f"the last batch of each epoch has n_rows % batch_size = {tail} rows"
        if bs > d_p
        else f"every batch has at most {bs} rows"
    )
    lower = next((c for c in range(bs - 1, d_p, -1) if _schedule_ok(n, c, d_p)), None)
    upper = next(c for c in range(bs + 1, n + 1) if _schedule_ok(n, c, d_p))  # c = n always works
    choice = f"{lower} or {upper}" if lower is not None else f"{upper}"
    raise ValueError(
        f"Paillier LR refuses mini-batches of <= {d_p} rows (the provider's feature count): with n_rows={n} and "
        f"batch_size={bs}, {where}, and the provider's exact gradient X_p^T d over it would reveal the "
        f"residuals (hence the labels); choose batch_size={choice} instead"
    )


class PaillierLR(VerticalProtocol):
    name = "paillier_lr"

    threat_model: ClassVar[str] = (
        "semi-honest bank and provider; OU (default, 3072-bit) or Paillier (DCRA + DJN short exponent, 2048-bit), "
        ">= 2048-bit keys; no arbiter"
    )
    leakage: ClassVar[dict[str, str]] = {
        "bank": "provider's partial logits X_p w_p of every batch row and test row (hence the full logits); "
        "masked provider gradients (statistically hidden, re-randomised ciphertexts); provider feature count; "
        "of the provider's monotone constraints nothing beyond what its partial logits show",
        "provider": "its own exact per-batch gradients X_p^T d (hence its own weights): d_p linear equations in "
        "each batch's residuals, so batches of <= d_p rows are refused; public sizes and schedule; of the "
        "bank's monotone constraints nothing beyond what those gradients show",
    }

    def __init__(
        self,
        params: LRParams = LRParams(),
        *,
        scheme: str = DEFAULT_SCHEME,
        key_bits: int = 0,
        monotone: str = "",
    ):
        check_he_options({"scheme": scheme, "key_bits": key_bits})
        self.params = params
        self.scheme = scheme
        self.key_bits = resolve_key_bits(scheme, key_bits)
        #: party-local (this party's own features only): not in params_dict, never sent
        self.monotone = monotone

    def params_dict(self) -> dict:
        return {**self.params.to_dict(), "scheme": self.scheme, "key_bits": self.key_bits}

    def feature_importance(self, ctx: Context) -> dict[str, np.ndarray]:
        """``|w_j|`` of this party's own weights, which it holds in the clear: no communication."""
        return {"abs_weight": np.abs(np.asarray(self.coef_, dtype=np.float64))}

    def run_info(self) -> dict:
        """This party's own monotone constraints (the other party never sees them)."""
        return dict(getattr(self, "monotone_", {}))

    # ------------------------------------------------------------------------------------------------------
    def fit(self, ctx: Context, data: LocalData) -> None:
        p = self.params
        p.validate()
        signs = own_signs(self.monotone, data)  # a bad name fails here, before any traffic
        self.monotone_ = reported(data.feature_names, signs)
        signs = signs if signs.any() else None
        peer = two_party_peer(ctx, self.name)
        ch = ctx.channel
        self.history_: list[dict] = []
        n = data.n_rows
        with ch.phase("setup"):
            if ctx.role == BANK:
                if data.y is None:
                    raise ValueError("the bank must hold the labels")
                he = HeuBackend.generate(self.key_bits, self.scheme)
                ch.send_bytes(peer, he.public_key_bytes())
                info = ch.recv_json(peer)
                self.n_provider_features_ = int(info["n_features"])
                if int(info["n_rows"]) != n:
                    raise ValueError("bank and provider disagree on the number of aligned rows")
                check_batch_schedule(n, p.batch_size, self.n_provider_features_)
                # the range every masked gradient must decrypt into (OU overflow guard, module docstring)
                mask_bits = int(info["mask_bits"])
                # at most what int64 features allow, so an overflowed OU plaintext (uniform mod p) lands in
                # range with probability < 2^-(|p| - widest): negligible for every accepted key
                widest = int(p.batch_size).bit_length() + RESIDUAL_FRAC_BITS + 63 + MASK_BITS
                if not 0 < mask_bits <= min(widest, he.plaintext_bits - 4):
                    raise ValueError(
                        f"the provider announced an impossible gradient mask of {mask_bits} bits"
                    )
            else:
                he = HeuBackend.from_public_key(ch.recv_bytes(peer), self.scheme)
                Xq = encode_fixed(data.X, FEATURE_FRAC_BITS)
                # |X^T d| < batch * 2^(RES) * max|Xq|: the mask is MASK_BITS wider than that bound
                g_bits = (
                    int(p.batch_size).bit_length()
                    + RESIDUAL_FRAC_BITS
                    + int(np.abs(Xq).max(initial=1)).bit_length()
                )
                mask_bits = g_bits + MASK_BITS
                if mask_bits > he.plaintext_bits - 4:
                    raise ValueError(
                        f"the {he.key_bits}-bit {self.scheme} key's {he.plaintext_bits}-bit plaintexts are too "
                        f"short for the {mask_bits}-bit masked gradient"
                    )
                ch.send_json(peer, {"n_features": data.X.shape[1], "n_rows": n, "mask_bits": mask_bits})
                check_batch_schedule(n, p.batch_size, data.X.shape[1])  # same check as the bank: both stop
        X = data.X
        w = np.zeros(X.shape[1])
        b = 0.0
        scale = float(2 ** (RESIDUAL_FRAC_BITS + FEATURE_FRAC_BITS))
        led = ch.ledger
        with ch.phase("training"), ctx.progress.task("training", n_iterations(n, p), "iteration") as tick:
            for it, rows in enumerate(schedule(n, p)):
                t0 = time.perf_counter()
                tr = led.by_phase.setdefault("training", Traffic())
                s0, r0 = tr.bytes_sent, tr.bytes_recv
                if ctx.role == BANK:
                    u_p = ch.recv_arrays(peer)["u"]
                    residual = sigmoid(X[rows] @ w + b + u_p, p.sigmoid) - data.y[rows]
                    ct = he.encrypt(encode_fixed(residual, RESIDUAL_FRAC_BITS))
                    ch.send_bytes(peer, he.serialize(ct))
                    # the bank's own step, exactly PlainLR's, while the provider works
                    w -= p.learning_rate * (X[rows].T @ residual / len(rows) + p.l2 * w)
                    w = project_signs(w, signs)  # its own constraints, locally
                    b -= p.learning_rate * residual.mean()
                    masked = he.decrypt_big(he.deserialize(ch.recv_bytes(peer))).ravel()
                    # g_p + r with |g_p| < 2^g_bits and 0 <= r < 2^mask_bits: nothing else goes back
                    check_range(masked, mask_bits + 1, "the provider's masked gradient")
                    ch.send_json(peer, [str(int(v)) for v in masked])
                else:
                    ch.send_arrays(peer, u=X[rows] @ w)
                    ct_d = he.deserialize(ch.recv_bytes(peer))
                    ct_g = he.matmul_plain(Xq[rows].T, ct_d)  # (d_p,) or (d_p, 1)
                    r = np.array([secrets.randbits(mask_bits) for _ in range(X.shape[1])], dtype=object)
                    # fresh randomness: otherwise [[g_p + r]] is a deterministic function of [[d]] and X_p
                    ct_g = he.rerandomize(he.add_plain(ct_g, r.reshape(he.shape(ct_g))))
                    ch.send_bytes(peer, he.serialize(ct_g))
                    masked = [int(v) for v in ch.recv_json(peer)]
                    g_int = [m - int(ri) for m, ri in zip(masked, r.tolist(), strict=True)]
                    grad = np.array([v / scale for v in g_int])
                    w -= p.learning_rate * (grad / len(rows) + p.l2 * w)
                    w = project_signs(w, signs)  # its own constraints, locally
                led.flush()
                self.history_.append(
                    {
                        "iteration": it,
                        "rows": len(rows),
                        "s": time.perf_counter() - t0,
                        "bytes_sent": tr.bytes_sent - s0,
                        "bytes_recv": tr.bytes_recv - r0,
                    }
                )
                tick()
        self.coef_ = w
        self.intercept_ = b if ctx.role == BANK else None

    def decision_function(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        peer = two_party_peer(ctx, self.name)
        with ctx.channel.phase("scoring"):
            u = data.X @ self.coef_
            if ctx.role != BANK:
                ctx.channel.send_arrays(peer, u=u)
                return None
            return u + self.intercept_ + ctx.channel.recv_arrays(peer)["u"]

    def prospect_margins(self, ctx: Context, data: LocalData):  # noqa: ANN201 - an MPCTensor
        """Each party's own ``X w`` (the bank: its intercept) is its share: no communication.

        A provider holds its weights in the clear (as in training), so it can rank its own
        prospects without the bank; the shares add only the bank's intercept.
        """
        from mpc_fl.crypto.share_math import local_shares

        u = data.X @ self.coef_ if data.X.shape[1] else np.zeros(data.n_rows)
        return local_shares(u + (self.intercept_ if ctx.role == BANK else 0.0), data.n_rows)

    def reason_contributions(
        self, ctx: Context, data: LocalData, membership: np.ndarray, reference: np.ndarray
    ):  # noqa: ANN201 - an MPCTensor
        """Each party's own ``((X - ref) * w) @ A`` is its share of its own columns: no communication.

        A party holds its weights in the clear (as in training), so its contributions are its own
        to compute; the shares only let the ranking compare them with the other party's, and
        open no more than the top R to the bank.
        """
        from mpc_fl.crypto.reasons import unit_counts
        from mpc_fl.crypto.share_math import local_shares
        from mpc_fl.models.reasons import lr_contributions

        counts = unit_counts(ctx.rank, membership.shape[1])
        blocks = [np.zeros((data.n_rows, g)) for g in counts]
        blocks[ctx.rank] = lr_contributions(data.X, self.coef_, reference, membership)
        values = np.hstack(blocks)
        return local_shares(values, values.shape)

    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Each party's own plaintext weights (the bank also its intercept)."""
        return {"intercept": self.intercept_}, {"coef": np.asarray(self.coef_, dtype=np.float64)}

    def import_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        self.coef_, self.intercept_ = arrays["coef"], meta["intercept"]
