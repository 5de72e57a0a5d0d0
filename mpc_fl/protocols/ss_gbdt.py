"""Secret-shared histogram GBDT (SS-GBDT) on CrypTen arithmetic shares (2 or more parties).

Threat model: semi-honest parties; Beaver triples and fixed-mask correlations come from a
separate dealer process (CrypTen's TTP, :mod:`mpc_fl.crypto.dealer`) that colludes with no
party. The dealer sees only request sizes.

Algorithm: exactly :class:`mpc_fl.models.gbdt.PlainGBDT` on the joint feature list (parties'
features in rank order, the bank's first): quantile bins per feature, split "bin <= b goes
left", XGBoost gain with ``min_child_weight`` on both children, complete trees where each node
takes its best valid split (a node without one sends all rows left), leaf weight
``-G/(H+lambda) * learning_rate``, base margin ``logit(mean y)`` computed by the bank.
The trees equal PlainGBDT's except at near ties: gains are computed in fixed point (a
reciprocal with an absolute error of about 2^-16), so where two candidates' gains differ by less
than that error times G^2 the secure argmax may take the other one, and two runs may differ
(measured on default_credit, 20 trees: the first difference at tree 6 or 12, gains 1% apart).

How it runs. Each party bins its own features on its own training rows and builds its private
0/1 one-hot bin matrix ``B_p`` (n x d_p*n_bins), masked and opened once as a fixed-mask matrix
with 0 fractional bits (:mod:`mpc_fl.crypto.fixed_mask`; indicator matrices carry no
fractional bits, so their products need no truncation and cannot wrap). Margins, gradients
``g = sigmoid(margin) - y``, ``h = p(1-p)``, node memberships ``[m]`` (0/1, exact integers) and
leaf weights are secret-shared throughout. A level's nodes carry the (n, 3k) shared matrix
``[g*m | h*m | m]``; only the *left* children's histograms are computed, with a single opening
of their n*3*k/2 masked values for every party's bin matrix; a right child's histogram is its
parent's minus its sibling's (exact). Gains ``G_L^2/(H_L+lam) + G_R^2/(H_R+lam)`` (parent term
dropped: constant per node), the validity tests (``H_L, H_R >= min_child_weight``; a candidate
whose bin is empty in the node duplicates the previous one and is dropped) and the argmax over
all candidates of all parties (a 4-way comparison tournament that keeps the first maximum, like
the plaintext) run on shares; every sign test of a level (validity and range reduction) is one
batched comparison (six rounds, :mod:`mpc_fl.crypto.compare`). Reciprocals use a public scale and
secret power-of-16 range reduction (bits from comparisons, exact integer arithmetic) plus
three quartic iterations, so every fixed-point product stays small (crypten.md 2.2, 2.4);
independent products share one Beaver round, each distinct or broadcast operand opened once
(:func:`mpc_fl.crypto.share_math.products`). The split owner knows its 0/1
indicator ``bins[:, f] <= b`` in the clear, so a left child's columns are its parent's times the
owner's private bits (:func:`mpc_fl.crypto.private_bits.mul_private_bits`: the other party's
masked shares go to the owner, the owner's masked bits come back; no Beaver product), and a
right child's are the parent's minus the left's. The margin update routes the leaf weights up
the tree the same way (a node's value is its right child's plus the indicator times left minus
right), so no leaf membership is ever formed. The leaves' G and H are the last level's chosen
left/right sums (selected by the shared argmax one-hot), so no row-wise product is needed for them.

Rounds: every tree asks the dealer for the same list of correlations, so after the first tree
party 0 fetches a whole tree's list in one request (:mod:`mpc_fl.crypto.prefetch`). The ledger
labels each step (gradients, histograms, gains, argmax, routing, leaves) so the tables show
where bytes and rounds go.

What each party learns (beyond its own inputs and the public sizes: rows, every party's
feature count, the hyperparameters):

* every party: for every internal node of every tree, which party owns its split, or that
  the node has no valid split (so the tree shape and split ownership are public);
* the owner of a split: the feature index and bin index of that split, hence which of *all*
  training (and test) rows satisfy it; the threshold value (the bin edge) never leaves its owner;
* these split choices are label information in their own right: each is the argmax of gains
  computed from the label-dependent gradients ``g = p - y``, ``h = p(1-p)`` of the node's rows
  (in the first tree ``p`` is the constant label mean, so the gains are functions of how many
  positives each side of a candidate holds). Everyone learns, per node, that the owner's best
  split was at least as good as every candidate of the other parties on those gradients (ties
  go to the first in the joint feature order), and at a no-split node that no candidate left
  ``min_child_weight`` of hessian on both sides; the owner learns that its feature f at bin b
  was the best split of all for that node's gradients. Where the owner also knows the node's
  rows (below), these are inequalities between gradient sums (in the first tree: label counts)
  over row sets it can list for each of its candidates, e.g. that "f <= edge b" separates the
  defaulters among those rows better than any other of its thresholds;
* so a party that owns every split on the path from the root to a node (no-split nodes count
  as anyone's: they send every row left) learns exactly which training rows reach that node,
  internal node or leaf, and at scoring which test rows do.
  :func:`mpc_fl.models.gbdt.reconstructable_nodes` gives these nodes from the public owners and
  :meth:`SecretSharedGBDT.run_info` reports their count per party, leaving out the nodes every
  party knows from the owners alone (:func:`mpc_fl.models.gbdt.reconstructable_by_all`): the
  root and any node reached only through no-split nodes' left branches (every row), and the
  publicly empty nodes (the right child of a no-split node and all below it). With
  ``min_child_weight > 0`` every counted node holds at least one training row. On
  default_credit (20 trees of depth 4, 32 bins, the benchmarks' stratified-public split, 600
  non-root nodes: 280 internal, 320 leaves): the provider 114 (102 internal, 12 leaves), the
  bank 74 (48 internal, 26 leaves), 13 nodes publicly empty, in a run that reproduces the
  recorded one (benchmarks/results/protocols.json). The counts are per run: fixed-point
  rounding, which depends on the random shares, can flip a close argmax (another run at the
  same settings took another bin at one node of tree 7 and drifted from there: provider 118,
  bank 74, 12 publicly empty);
* the bank (rank 0): the test scores it asked for; it also knows the base margin (its own
  label mean).

Nothing else is revealed: labels, the memberships of all other nodes (and the paths of training
or test rows through them), gradients, histograms, gains (beyond their argmax, above), leaf
weights and margins stay secret-shared. Scoring: each party bins the test rows with its own
edges, shares the test-row indicator of each split it owns, path indicators are multiplied down
the trees on shares, and only the bank receives the scores.

Oblivious mode (``oblivious=True``): nothing about the trees is opened. The argmax one-hot
stays shared; a node's left-indicator of every row is ``sum_q B_q v_q`` with ``v_q`` the
one-hot's suffix sums per feature (:meth:`SecretSharedGBDT._route`), computed with the same
fixed-mask bin matrices (one opening of the masked ``v_q``, d_q*n_bins x k values). The saved
model keeps the shared routing vectors; scoring opens each party's test-row bin matrix under
a fixed mask, gets every node's indicator in one product round and multiplies them down the
paths (one round per level); only the bank receives the scores. Each party learns nothing
beyond the public sizes; the bank learns its test scores (tests/integration/test_oblivious_view.py
plays each party). Cost: nobody knows an indicator, so memberships take Beaver products
(``[m_left] = [m] * [ind]``, then ``[g*m], [h*m]``, and the leaves' ``[M] * [w]``): about a third
more training bytes than the default mode, a few more integer products per level.

Monotone constraints (``monotone="feature:+1,..."``, each party its own features only;
:mod:`mpc_fl.models.monotone`): exactly :func:`mpc_fl.models.gbdt.split_gains` and
:func:`mpc_fl.models.gbdt.constrain_tree`, on shares. Each party inputs, once, the shared 0/1
signs of its own candidates; per level, ``d = G_R (H_L + lam) - G_L (H_R + lam)`` (one product
round) joins the level's batched comparison, and ``valid *= 1 - pos [d > 0] - neg [d < 0]`` rides
in the reciprocal's rounds, so a split whose children's weights go the wrong way loses the argmax.
After each tree, its node values are clipped top down to the bounds the constrained splits set
(:meth:`SecretSharedGBDT._constrain`: one comparison and two exact product rounds per level); the
split signs come the reason units' way (:meth:`SecretSharedGBDT._split_units`: input by each
split's owner in the default mode, the routing vectors' feature one-hot times each party's
private signs in the oblivious mode). Nothing is opened: the parties learn only that some party
has constraints (it sets the protocol's shape); tests/integration/test_oblivious_view.py plays
each party with two different provider constraints, and a mutant that opens the split signs.

Feature importance (``--importance``; :meth:`SecretSharedGBDT.feature_importance`): per feature,
the total gain of the splits on it and their count, as :func:`mpc_fl.models.gbdt.importance`,
computed once after training on shares (the chosen gains from the kept one-hots and scores, each
node's feature a shared one-hot) and opened to the feature's owner alone; what a provider lets
the bank see of its own is its release level (the application's choice, not the protocol's).

Reason codes (:meth:`SecretSharedGBDT.reason_contributions`): Saabas's path attribution
(:func:`mpc_fl.models.reasons.tree_contributions`) on shares. Training also keeps every internal
node's value ``-lr * G/(H + lam)`` as shares (computed in the leaves' batch: no extra round).
At explain time each node's split unit is a shared 0/1 (input by the split's owner in the default
mode; the grouping times the routing vectors' feature one-hot in the oblivious mode), each
edge's value change times its parent's unit is summed along every leaf's path, and the rows'
shared leaf indicators times that give the contributions; only the ranking's top R reach the
bank (:mod:`mpc_fl.crypto.reasons`), so the paths stay hidden in the oblivious mode. What the
bank learns from a reason is what it releases: that unit's contribution on the applicant's path.

``mask="generic"`` replaces the fixed-mask products by CrypTen's Beaver matmul on
``crypten.cryptensor(B_p, src=p, precision=0)``, which re-masks the whole ``B_p`` for every
level (O(n*bins) bytes per histogram instead of O(n)); kept to measure the difference.
"""

from __future__ import annotations

import mpc_fl.crypto.secure_crypten  # noqa: F401  (must precede any crypten import)

# isort: split

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ClassVar

import numpy as np
import torch
from crypten.mpc import MPCTensor

from mpc_fl.crypto.dealer import DEALER_THREAT_MODEL
from mpc_fl.crypto.fixed_mask import FixedMaskMatrix
from mpc_fl.crypto.prefetch import DealerPrefetch
from mpc_fl.crypto.private_bits import NO_OWNER, mul_private_bits
from mpc_fl.crypto.secure_crypten import crypten
from mpc_fl.crypto.share_math import (
    RangeReduced,
    Ride,
    argmax_first,
    int_mul,
    on_shares,
    precision,
    products,
    times_factor,
    upscale,
)
from mpc_fl.models.gbdt import (
    NO_SPLIT,
    GBDTParams,
    apply_bins,
    base_margin,
    quantile_bin_edges,
    reconstructable_summary,
)
from mpc_fl.models.monotone import own_signs, reported
from mpc_fl.protocols.base import Context, LocalData, VerticalProtocol

MASKS = ("fixed", "generic")
#: ``ledger.step``: labels a block's traffic (histograms, gains, argmax, routing, leaves).
StepLabel = Callable[[str], AbstractContextManager]


def _one_hot_bins(bins: np.ndarray, n_bins: int) -> torch.Tensor:
    n, d = bins.shape
    B = torch.zeros(n, d * n_bins)
    cols = torch.from_numpy(bins.astype(np.int64)) + torch.arange(d) * n_bins
    B.scatter_(1, cols, 1.0)
    return B


class SecretSharedGBDT(VerticalProtocol):
    name = "ss_gbdt"
    uses_crypten = True
    threat_model: ClassVar[str] = DEALER_THREAT_MODEL
    leakage: ClassVar[dict[str, str]] = {
        "bank": "test scores; per node the owner party of the split (or no split); feature and bin of "
        "its own splits; the training rows and test-row paths of every node whose path splits are all "
        "its own or no split (counted in run_info); whether some party has monotone constraints; with "
        "--importance, the total gain and split count of each of its own features",
        "provider": "per node the owner party of the split (or no split); feature and bin of its own "
        "splits; the training rows and test-row paths of every node whose path splits are all its own "
        "or no split (counted in run_info); whether some party has monotone constraints; with --importance, "
        "the total gain and split count of each of its own features",
        "dealer": "request sizes only",
    }

    #: What each party learns in the oblivious mode (``oblivious=True``).
    OBLIVIOUS_LEAKAGE: ClassVar[dict[str, str]] = {
        "bank": "test scores only (no split owner, feature, bin, node membership or path); whether some "
        "party has monotone constraints; with --importance, the total gain and split count of each of its "
        "own features",
        "provider": "nothing beyond the public sizes and whether some party has monotone constraints; with "
        "--importance, the total gain and split count of each of its own features",
        "dealer": "request sizes only",
    }

    def __init__(
        self,
        params: GBDTParams = GBDTParams(),  # noqa: B008 (frozen)
        *,
        mask: str = "fixed",
        oblivious: bool = False,
        monotone: str = "",
    ):
        self.params, self.mask, self.oblivious = params, mask, bool(oblivious)
        self.monotone = monotone
        if self.oblivious:
            self.leakage = self.OBLIVIOUS_LEAKAGE

    def params_dict(self) -> dict:
        return {**self.params.to_dict(), "mask": self.mask, "oblivious": self.oblivious}

    def run_info(self) -> dict:
        """Per party (by role), how many nodes' training rows it can reconstruct: the measured leakage.

        ``reconstructable_nodes[role]`` is :func:`mpc_fl.models.gbdt.reconstructable_summary`:
        ``nodes`` (``nodes_internal`` + ``nodes_leaves``) of ``nodes_total`` non-root nodes,
        internal and leaves, leaving out the ``public`` ones every party knows from the owners
        (the root is never counted). The earlier keys ``internal``/``leaves`` (of
        ``internal_total``/``leaves_total``) keep their meaning for earlier records: they also
        count the publicly empty nodes (``empty``). In the oblivious mode nothing is
        reconstructable (every count 0 but the totals). Split
        owners are public, so every party computes the same numbers for everyone. Empty before
        ``fit``.
        """
        if not hasattr(self, "owners_"):
            return {}
        return {**self._leakage_info(), **getattr(self, "monotone_", {})}

    def _leakage_info(self) -> dict:
        if self.oblivious:  # no owner, split or membership is ever opened: nothing to reconstruct
            n_internal = 2**self.params.max_depth - 1
            nothing = {
                "nodes": 0,
                "nodes_internal": 0,
                "nodes_leaves": 0,
                "nodes_total": self.params.n_trees * 2 * n_internal,
                "public": 0,
                "internal": 0,
                "internal_total": self.params.n_trees * (n_internal - 1),
                "leaves": 0,
                "leaves_total": self.params.n_trees * (n_internal + 1),
                "empty": 0,
            }
            return {"oblivious": True, "reconstructable_nodes": dict.fromkeys(self.roles_, nothing)}
        return {
            "reconstructable_nodes": {
                role: reconstructable_summary(self.owners_, rank) for rank, role in enumerate(self.roles_)
            }
        }

    # ------------------------------------------------------------------ helpers
    def _node_histograms(self, U: MPCTensor, k: int) -> list[MPCTensor]:
        """Per party q, the (d_q, n_bins, 3, k) g/h/count histograms of the k nodes whose columns are U.

        ``U`` is (n, 3k): [g*m | h*m | m] per node. With fixed masks every party's bin matrix
        takes the same single opening of ``U`` (:meth:`FixedMaskMatrix.t_matmul_many`).
        """
        nb = self.params.n_bins
        if self.mask == "fixed":
            raw = FixedMaskMatrix.t_matmul_many(self.mats_, U)
        else:
            raw = [op(U) for op in self.hist_ops_]
        return [r.reshape(d_q, nb, 3, k) for r, d_q in zip(raw, self.widths_, strict=True)]

    def _candidates(self, hists: list[MPCTensor], k: int) -> tuple:
        """Left/right sums of every candidate split "bin <= b" (b < n_bins - 1), and bin counts."""
        nb = self.params.n_bins
        GL, HL, GR, HR, CNT = [], [], [], [], []
        for hist, d_q in zip(hists, self.widths_, strict=True):
            cum = on_shares(hist, lambda s: s.cumsum(1))
            tot = cum[:, nb - 1 :, :, :]
            left = cum[:, : nb - 1]
            right = tot - left
            GL.append(left[:, :, 0].reshape(-1, k))
            HL.append(left[:, :, 1].reshape(-1, k))
            GR.append(right[:, :, 0].reshape(-1, k))
            HR.append(right[:, :, 1].reshape(-1, k))
            CNT.append(hist[:, : nb - 1, 2].reshape(d_q, nb - 1, k))
        return GL, HL, GR, HR, CNT

    def _route(self, onehot: MPCTensor, offsets: list[int]) -> tuple[MPCTensor, list[MPCTensor]]:
        """Oblivious routing: the (n, k) 0/1 left-indicators of the chosen splits, nothing opened.

        Candidate (f, b) sends row i left iff ``bin[i, f] <= b``, i.e. iff the one-hot bin row of
        ``B`` meets the bins ``<= b``. So the k shared one-hot columns become, per party, the
        (d_q*n_bins, k) shared vector ``v_q[f, b'] = sum_{b >= b'} onehot[f, b]`` (a local,
        exact suffix sum), and ``[ind] = sum_q B_q [v_q] + [no split]`` needs only the fixed-mask
        products of every party's bin matrix (one opening of the masked ``v_q``, all parties at
        once). Returns the indicators and the routing vectors (the saved model scores with them).
        """
        nb = self.params.n_bins
        oh = onehot.t()  # (C + 1, k), exact 0/1 at precision 0
        C = oh.size(0) - 1

        def suffix_sums(s: torch.Tensor, d: int) -> torch.Tensor:
            t = s.reshape(d, nb - 1, s.shape[-1]).flip(1).cumsum(1).flip(1)
            return torch.cat([t, torch.zeros_like(t[:, :1])], dim=1).reshape(d * nb, s.shape[-1])

        vs = [
            on_shares(oh[o : o + d * (nb - 1)], lambda s, d=d: suffix_sums(s, d))
            for o, d in zip(offsets, self.widths_, strict=True)
        ]
        vs.append(oh[C:])  # (1, k): "no valid split" sends every row left
        return self._left_indicators(self.mats_, vs), vs

    @staticmethod
    def _left_indicators(mats: list[FixedMaskMatrix], routes: list[MPCTensor]) -> MPCTensor:
        """``sum_q B_q v_q + [no split]`` for routing vectors ``[v_0, ..., v_P-1, no split]``: one opening."""
        ind = routes[-1]
        for part in FixedMaskMatrix.matmul_many(mats, routes[:-1]):
            ind = part + ind
        return ind

    def _reveal_splits(
        self, onehot: MPCTensor, offsets: list[int], k: int
    ) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
        """Default mode: everyone learns each node's owner party (or no split), the owner its own split."""
        nb = self.params.n_bins
        C = onehot.size(1) - 1
        # reveal to everyone only the owner party (or no split); to the owner its own candidate
        blocks = []
        for q, d in enumerate(self.widths_):
            blocks.append(onehot[:, offsets[q] : offsets[q] + d * (nb - 1)])
        owner_bits = crypten.stack([b.sum(1) for b in blocks] + [onehot[:, C]], dim=1)  # (k, P + 1)
        owner_bits = owner_bits.get_plain_text().round().long()
        owners = np.full(k, NO_SPLIT, dtype=np.int64)
        for j in range(k):
            w = int(torch.argmax(owner_bits[j]))
            owners[j] = w if w < self.n_parties_ else NO_SPLIT
        mine_plain = None
        for q, b in enumerate(blocks):
            plain = b.get_plain_text(dst=q)
            if q == self.rank_:
                mine_plain = plain
        splits: dict[int, tuple[int, int]] = {}
        for j in range(k):
            if owners[j] == self.rank_:
                c = int(torch.argmax(mine_plain[j]))
                splits[j] = divmod(c, nb - 1)
        return owners, splits

    def _scores(self, hists: tuple, k: int) -> tuple[list[int], MPCTensor]:
        """(k, C + 1) split scores: invalid -1, valid gain + 1 (scaled), then 0 for "no split"."""
        GL, HL, GR, HR, CNT = hists
        p = self.params
        nb, lam = p.n_bins, p.reg_lambda
        G = crypten.stack([crypten.cat(GL), crypten.cat(GR)])  # (2, C, k)
        H = crypten.stack([crypten.cat(HL), crypten.cat(HR)])
        C = G.size(1)
        # validity: H_L, H_R >= min_child_weight, and the candidate's bin non-empty in the node
        # (bin 0 excepted): an empty bin b makes "bin <= b" the same split as "bin <= b-1".
        cnt = crypten.cat([c.reshape(-1, k) for c in CNT])  # (C, k) counts of bin b
        offsets = [0, *np.cumsum([d * (nb - 1) for d in self.widths_]).tolist()[:-1]]
        first = torch.zeros(C, 1)
        for o, d in zip(offsets, self.widths_, strict=True):
            first[o + torch.arange(d) * (nb - 1)] = 1.0
        checks = crypten.cat([H - p.min_child_weight, (cnt + (first - 0.5)).unsqueeze(0)])  # (3, C, k)
        # gains: G^2/(H + lam) with x = (H + lam)/s in [lam/s, 1]
        x = (H + lam).div(self.scale_)
        gs = G.div(self.scale_g_)
        kb = self.k_bits_
        tests = [checks.reshape(-1)]
        if kb > 0:
            tests.append(RangeReduced.thresholds(x, kb).reshape(-1))
        if self.mono_ is not None:
            tests.append(self._monotone_signs(gs, H).reshape(-1))
        ge = crypten.cat(tests) >= 0  # every sign test of the level in one comparison: exact 0/1
        ok = ge[: checks.nelement()].reshape(checks.size())
        n_rr = kb * x.nelement()
        ge_rr = ge[checks.nelement() : checks.nelement() + n_rr].reshape(kb, *x.size()) if kb > 0 else None
        # valid = ok0 * ok1 * ok2 (* allowed) and valid * c_j ride along in the reciprocal's first rounds
        rides: list[Ride] = [lambda got: [(ok[0], ok[1])], lambda got: [(got[0], ok[2])]]
        at = 1  # where valid lands in rr.ridden
        if self.mono_ is not None:
            ge_d = ge[checks.nelement() + n_rr :].reshape(2, *x.size()[1:])  # [d >= 0], [-d >= 0]
            rides = self._monotone_rides(ok, ge_d)
            at = 4
        if kb > 0:
            c = 1 - ge_rr  # [x < 16^-j], as the range reduction's bits
            rides.append(lambda got: [(got[at], c)])  # valid broadcast over the k bits
        rr = RangeReduced(x, kb, gs, ge_rr, square=True, ride=rides)
        t = rr.scaled  # G^2/(H + lam) / factor, scaled by s / s_g^2
        valid = rr.ridden[at]
        # valid * gain = valid * t * factor: (valid * c_j) * t, exact, in one round
        pairs = [(valid, t)]  # broadcast; t is opened once for both pairs
        if kb > 0:
            pairs.append((rr.ridden[at + 1], t))
        vt, *vct = products(pairs)
        if kb > 0:
            vt = times_factor(vt, vct[0])
        # invalid: -1; valid: gain + 1 >= 1 (gains are >= 0)
        score = vt[0] + vt[1] + int_mul(valid, 2) - 1.0
        dummy = crypten.cryptensor(torch.zeros(1, k))  # "no valid split": 0
        return offsets, crypten.cat([score, dummy]).t()

    def _monotone_signs(self, gs: MPCTensor, H: MPCTensor) -> MPCTensor:
        """(2, C, k): ``d`` and ``-d``, ``d = G_R (H_L + lam) - G_L (H_R + lam)`` (the sign of
        ``w_L - w_R``, :func:`mpc_fl.models.gbdt.split_gains`), both scaled by ``1/s_g^2``; one round.

        ``gs`` is ``G / s_g`` (2, C, k); ``(H + lam) / s_g`` keeps both factors near ``sqrt(n)``,
        so the products keep their relative precision for small children too.
        """
        hs = (H + self.params.reg_lambda).div(self.scale_g_)
        right_left, left_right = products([(gs[1], hs[0]), (gs[0], hs[1])])
        d = right_left - left_right
        return crypten.stack([d, -d])

    def _monotone_rides(self, ok: MPCTensor, ge_d: MPCTensor) -> list[Ride]:
        """The products that make ``valid = ok0 * ok1 * ok2 * allowed`` (``rr.ridden[4]``), where
        ``allowed = 1 - pos * [d > 0] - neg * [d < 0]`` rejects a split on a constrained feature whose
        children's weights go the wrong way; ``pos``/``neg`` are the parties' shared 0/1 signs per
        candidate (nobody learns another party's), all products of 0/1 integers: exact."""
        pos, neg = self.mono_[0], self.mono_[1]  # (C, 1): broadcast over the level's nodes
        above, below = 1 - ge_d[1], 1 - ge_d[0]  # [d > 0], [d < 0]
        return [
            lambda got: [(ok[0], ok[1]), (pos, above), (neg, below)],
            lambda got: [(got[0], ok[2])],
            lambda got: [(got[3], 1 - got[1] - got[2])],
        ]

    @staticmethod
    def _node_totals(cands: tuple) -> tuple[MPCTensor, MPCTensor]:
        """(k,) G and H of a level's k nodes: any candidate's two sides sum to the node's total."""
        GL, HL, GR, HR = (crypten.cat(c) for c in cands[:4])
        return GL[0] + GR[0], HL[0] + HR[0]

    @staticmethod
    def _children_sums(cands: tuple, onehot: MPCTensor, k: int) -> tuple[MPCTensor, MPCTensor]:
        """G and H of the 2k children of the k nodes, from their chosen candidates (children interleaved).

        Why: the last level's leaves need no row-wise product; the chosen split's left/right
        sums are already in the histograms. "No split" (the last one-hot column) sends every
        row left: left = the node's total, right = 0.
        """
        GL, HL, GR, HR = (crypten.cat(c) for c in cands[:4])  # (C, k)
        total_g, total_h = SecretSharedGBDT._node_totals(cands)
        zero = total_g * 0
        sides = crypten.stack(
            [
                crypten.cat([GL, total_g.unsqueeze(0)]),
                crypten.cat([HL, total_h.unsqueeze(0)]),
                crypten.cat([GR, zero.unsqueeze(0)]),
                crypten.cat([HR, zero.unsqueeze(0)]),
            ]
        )  # (4, C + 1, k)
        picked = (sides * onehot.t().unsqueeze(0)).sum(1)  # (4, k)
        G = crypten.stack([picked[0], picked[2]], dim=1).reshape(2 * k)
        H = crypten.stack([picked[1], picked[3]], dim=1).reshape(2 * k)
        return G, H

    def _fit_tree(
        self, margin: MPCTensor, ey: MPCTensor, bins: np.ndarray, step: StepLabel
    ) -> tuple[MPCTensor, MPCTensor, np.ndarray, dict[int, tuple[int, int]], list[MPCTensor]]:
        """One tree: the new margin, the shared node values (internal nodes, then the leaf weights), the
        public owners and this party's splits,
        and (oblivious mode) the shared routing vectors of its nodes, per party plus "no split"."""
        with step("gradients"):
            prob = margin.sigmoid()
            g = prob - ey
            h = prob * (1 - prob)
        self._level_picks: list[tuple[MPCTensor, MPCTensor]] = []
        self._level_totals: list[tuple[MPCTensor, MPCTensor]] = []
        if self.oblivious:
            out = self._fit_tree_oblivious(margin, g, h, step)
        else:
            out = self._fit_tree_revealed(margin, g, h, bins, step)
        onehots, scores = zip(*self._level_picks, strict=True)
        G = crypten.cat([t[0] for t in self._level_totals])
        self._picks.append((crypten.cat(list(onehots)), crypten.cat(list(scores)), G, self._raw_internal))
        return out

    def _choose_splits(
        self, U: MPCTensor, parents: list[MPCTensor], level: int, step: StepLabel
    ) -> tuple[list[MPCTensor], tuple, list[int], MPCTensor]:
        """A level's histograms (from the left children's columns ``U``), candidates, and the shared
        argmax one-hot of every node's best split.

        Only the left children's histograms are computed (one opening of ``U`` for every party's
        bin matrix); a right child's histogram is its parent's minus its sibling's.
        """
        k, kl = 2**level, max(1, 2**level // 2)  # the root at level 0, else the left children
        with step("histograms"):
            lh = self._node_histograms(U, kl)
            if level > 0:  # interleave (left, parent - left): children 2j, 2j + 1 of node j
                lh = [
                    crypten.stack([a, b - a], dim=4).reshape(*a.size()[:3], k)
                    for a, b in zip(lh, parents, strict=True)
                ]
        cands = self._candidates(lh, k)
        with step("gains"):
            offsets, scores = self._scores(cands, k)
        with step("argmax"):
            onehot = argmax_first(scores)  # (k, C + 1), exact 0/1 at precision 0
        self._level_picks.append((onehot, scores))  # feature importance's inputs
        return lh, cands, offsets, onehot

    @staticmethod
    def _own_indicators(bins: np.ndarray, splits: dict[int, tuple[int, int]], k: int) -> np.ndarray | None:
        """(n, k) "goes left" of this party's own splits among k nodes (other columns unread), or None."""
        if not splits:
            return None
        ind = np.zeros((len(bins), k), dtype=bool)
        for j, (f, b) in splits.items():
            ind[:, j] = bins[:, f] <= b
        return ind

    def _fit_tree_revealed(
        self, margin: MPCTensor, g: MPCTensor, h: MPCTensor, bins: np.ndarray, step: StepLabel
    ) -> tuple[MPCTensor, MPCTensor, np.ndarray, dict[int, tuple[int, int]], list[MPCTensor]]:
        """Default mode: each split's owner knows its indicator, so rows are routed by products
        with the owner's private bits (:func:`mul_private_bits`), never by Beaver products.

        ``X = [g*m | h*m | m]`` of a level's nodes is carried down the tree: a left child's
        columns are its parent's times the owner's indicator (one masked share one way, one
        masked bit the other), so the histograms need no product of their own. The margin
        update routes the leaf weights up: a node's value for a row is its right child's plus
        the indicator times (left - right), from the leaves (shared scalars) to the root.
        """
        n, depth = len(bins), self.params.max_depth
        ones = crypten.cryptensor(torch.ones(n), src=0)  # the root's membership, at g's precision
        X = crypten.stack([g, h, ones], dim=1).unsqueeze(2)  # (n, 3, 1)
        owners_t = np.full(2**depth - 1, NO_SPLIT, dtype=np.int64)
        splits_t: dict[int, tuple[int, int]] = {}
        hists: list[MPCTensor] = []
        levels: list[tuple[np.ndarray | None, np.ndarray]] = []  # per level: own indicators, column owners
        totals: list[tuple[MPCTensor, MPCTensor]] = []  # per level: its nodes' G and H
        left = X
        for level in range(depth):
            k, first = 2**level, 2**level - 1
            hists, cands, offsets, onehot = self._choose_splits(left.reshape(n, -1), hists, level, step)
            totals.append(self._node_totals(cands))
            with step("argmax"):
                owners, splits = self._reveal_splits(onehot, offsets, k)
            owners_t[first : first + k] = owners
            splits_t.update({first + j: fb for j, fb in splits.items()})
            levels.append((self._own_indicators(bins, splits, k), self._bit_owners(owners)))
            if level == depth - 1:
                break  # the leaves need no memberships: the margin update routes the weights instead
            with step("routing"):
                ind, cols = levels[level]
                left = mul_private_bits(X, None if ind is None else ind[:, None, :], (n, 1, k), cols)
                X = crypten.stack([left, X - left], dim=3).reshape(n, 3, 2 * k)
        with step("leaves"):
            values = self._node_values(totals, self._children_sums(cands, onehot, 2 ** (depth - 1)))
        if self.mono_ is not None:
            with step("monotone"):
                values = self._constrain(values, self._node_signs([splits_t], []))
        with step("leaves"):
            w = values[2**depth - 1 :]
            value = w.unsqueeze(0)  # (1, 2^depth): every row's value at the leaves
            for level in reversed(range(depth)):
                ind, cols = levels[level]
                lw, rw = value[:, 0::2], value[:, 1::2]
                value = rw + mul_private_bits(lw - rw, ind, (n, 2**level), cols)  # broadcast: (n, k)
            margin = margin + value.reshape(n)
        return margin, values, owners_t, splits_t, []

    @staticmethod
    def _bit_owners(owners: np.ndarray) -> np.ndarray:
        """Split owners as :func:`mul_private_bits` columns: a node without a split multiplies by ones."""
        return np.where(owners == NO_SPLIT, NO_OWNER, owners)

    def _fit_tree_oblivious(
        self, margin: MPCTensor, g: MPCTensor, h: MPCTensor, step: StepLabel
    ) -> tuple[MPCTensor, MPCTensor, np.ndarray, dict[int, tuple[int, int]], list[MPCTensor]]:
        """Oblivious mode: memberships and indicators stay shared; ``[m_left] = [m] * [ind]`` (Beaver)."""
        n, depth = g.size(0), self.params.max_depth
        GH = crypten.stack([g, h], dim=1).unsqueeze(2)  # (n, 2, 1)
        M = crypten.cryptensor(torch.ones(n, 1), src=0, precision=0)  # root: every row
        hists: list[MPCTensor] = []
        routes: list[list[MPCTensor]] = []  # per level, per party (+ no split)
        totals: list[tuple[MPCTensor, MPCTensor]] = []  # per level: its nodes' G and H
        left = M
        for level in range(depth):
            k = 2**level
            kl = max(1, k // 2)
            with step("histograms"):
                gm = (GH * left.unsqueeze(1)).reshape(n, 2 * kl)  # exact: 0/1 at precision 0
                U = crypten.cat([gm, upscale(left, precision(gm))], dim=1)
            hists, cands, offsets, onehot = self._choose_splits(U, hists, level, step)
            totals.append(self._node_totals(cands))
            with step("routing"):
                ind, vs = self._route(onehot, offsets)
                routes.append(vs)
                left = M * ind  # exact
                M = crypten.stack([left, M - left], dim=2).reshape(n, 2 * k)
        with step("leaves"):
            values = self._node_values(totals, self._children_sums(cands, onehot, 2 ** (depth - 1)))
        route_t = [crypten.cat(list(level), dim=1) for level in zip(*routes, strict=True)]
        if self.mono_ is not None:
            with step("monotone"):
                values = self._constrain(values, self._node_signs([], route_t))
        with step("leaves"):
            margin = margin + (M * values[2**depth - 1 :]).sum(1)  # exact: M is 0/1 at precision 0
        owners_t = np.full(2**depth - 1, NO_SPLIT, dtype=np.int64)
        return margin, values, owners_t, {}, route_t

    # ------------------------------------------------------------------ feature importance
    def feature_importance(self, ctx: Context) -> dict[str, np.ndarray]:
        """The total gain and the count of the splits on each of this party's features, opened to it alone.

        Per node the chosen split's gain is the argmax one-hot times the level's scores (its children's
        ``G^2/(H + lam)``, scaled) minus the parent's ``G^2/(H + lam) = -G v / lr`` (``v`` its
        unconstrained value); each node's feature is a shared one-hot (:meth:`_split_units` over every
        party's features), so the per-feature sums are products on shares, and each party opens only
        its own block: a handful of rounds for the whole model, nothing else revealed.
        """
        picks = getattr(self, "_picks", None)
        if not picks:
            raise ValueError("feature importance is computed right after training, not from a saved model")
        oh, scores, G, raw = (crypten.stack([p[k] for p in picks]) for k in range(4))  # (trees, nodes, ...)
        chosen, parent = products([(oh, scores), (G, raw)])  # exact (one-hots are 0/1), fixed point
        ratio = self.scale_g_**2 / self.scale_
        gain = (chosen.sum(2) - 1) * ratio + parent.div(self.params.learning_rate)  # (trees, nodes)
        feature = self._split_units(np.eye(self.widths_[self.rank_]), list(self.widths_))  # (t, n, d), 0/1
        (by_feature,) = products([(feature, gain.unsqueeze(2))])
        totals = crypten.stack([by_feature.sum((0, 1)), upscale(feature.sum((0, 1)), precision(by_feature))])
        ends = np.cumsum([0, *self.widths_])
        own = None
        for q in range(self.n_parties_):
            opened = totals[:, int(ends[q]) : int(ends[q + 1])].get_plain_text(dst=q)
            if q == self.rank_:
                own = opened.double().numpy()
        return {"gain": own[0], "splits": np.round(own[1])}

    # ------------------------------------------------------------------ monotone constraints
    def _candidate_signs(self, signs: np.ndarray) -> MPCTensor:
        """(2, C, 1) shared 0/1: per candidate split of every party, whether its feature is constrained
        +1 (row 0) or -1 (row 1). Each party inputs its own; nobody learns another party's."""
        nb, parts = self.params.n_bins, []
        for q, d_q in enumerate(self.widths_):
            mine = torch.zeros(2, d_q * (nb - 1))
            if q == self.rank_:
                per_bin = torch.from_numpy(np.repeat(signs, nb - 1))
                mine[0], mine[1] = (per_bin > 0).float(), (per_bin < 0).float()
            parts.append(crypten.cryptensor(mine, src=q, precision=0))
        return crypten.cat(parts, dim=1).unsqueeze(2)

    def _node_signs(self, splits: list[dict[int, tuple[int, int]]], routes: list[MPCTensor]) -> MPCTensor:
        """(2, internal nodes) shared 0/1: whether each node's split feature of this tree is constrained
        +1 (row 0) or -1 (row 1): :meth:`_split_units` with each party's signs as its grouping, the
        parties' columns summed (local). Nobody learns another party's signs."""
        signs = np.stack([self.signs_ > 0, self.signs_ < 0], axis=1)  # (own features, 2)
        units = self._split_units(signs, [2] * self.n_parties_, splits, routes)  # (1, nodes, 2 x parties)
        n_internal = units.size(1)
        return on_shares(units, lambda s: s.reshape(n_internal, -1, 2).sum(1).t())

    def _constrain(self, values: MPCTensor, node_signs: MPCTensor) -> MPCTensor:
        """:func:`mpc_fl.models.gbdt.constrain_tree` on shares: every node's value clipped to the
        bounds its ancestors' constrained splits set, nothing opened.

        Level by level from the root: the level's own values are clipped to their bounds and its
        children's to the same (parent's) bounds in one comparison (``clip(v) = v + relu(lo - v) -
        relu(v - hi)`` as ``lo <= hi``); the children's midpoint replaces the cap of the left and the
        floor of the right child where the split's sign is +1 (the other way round for -1): 0/1
        sign times value, exact. The root's bounds are public and wider than any value
        (``lr * n / lam``: ``|g| <= 1``), so its children need no clipping.
        """
        depth, n = self.params.max_depth, self.n_rows_
        bound = self.params.learning_rate * n / self.params.reg_lambda + 1.0
        out = [values[0:1]]
        lo = self._public(np.full(1, -bound))
        hi = self._public(np.full(1, bound))
        for level in range(depth + 1):
            k, first = 2**level, 2**level - 1
            own = values[first : first + k]
            if level == depth:  # the leaves: clipped to their own bounds, nothing below
                out.append(self._clip(own, lo, hi))
                break
            kids = values[2 * first + 1 : 2 * first + 1 + 2 * k]  # interleaved (left, right) per node
            if level == 0:
                wide = kids  # the root's bounds hold every value
            else:
                two = lambda x: on_shares(x, lambda s: s.repeat_interleave(2))  # noqa: E731
                both = self._clip(
                    crypten.cat([own, kids]), crypten.cat([lo, two(lo)]), crypten.cat([hi, two(hi)])
                )
                out.append(both[:k])
                wide = both[k:]
            mid = (wide[0::2] + wide[1::2]).div(2)
            gap = crypten.stack([mid - hi, mid - lo])  # (2, k)
            pos, neg = node_signs[0, first : first + k], node_signs[1, first : first + k]
            p_gap, n_gap = products([(pos, gap), (neg, gap)])  # exact: 0/1 times values
            lo = crypten.stack([lo + n_gap[1], lo + p_gap[1]], dim=1).reshape(2 * k)
            hi = crypten.stack([hi + p_gap[0], hi + n_gap[0]], dim=1).reshape(2 * k)
        return crypten.cat(out)

    @staticmethod
    def _clip(v: MPCTensor, lo: MPCTensor, hi: MPCTensor) -> MPCTensor:
        """``min(max(v, lo), hi)`` for ``lo <= hi``: one comparison, one exact product round."""
        gaps = crypten.stack([lo - v, v - hi])
        (r,) = products([(gaps >= 0, gaps)])  # relu of both: exact, a 0/1 times a value
        return v + r[0] - r[1]

    def _public(self, value: np.ndarray) -> MPCTensor:
        """A public vector as shares (the bank holds it): no communication."""
        from mpc_fl.crypto.share_math import local_shares

        return local_shares(value if self.rank_ == 0 else None, len(value))

    def _node_values(
        self, totals: list[tuple[MPCTensor, MPCTensor]], leaves: tuple[MPCTensor, MPCTensor]
    ) -> MPCTensor:
        values = self._node_values_of(totals, leaves)
        self._level_totals = totals
        self._raw_internal = values[: 2**self.params.max_depth - 1]  # unconstrained: importance's parent term
        return values

    def _node_values_of(
        self, totals: list[tuple[MPCTensor, MPCTensor]], leaves: tuple[MPCTensor, MPCTensor]
    ) -> MPCTensor:
        """Every node's value in heap order, internal nodes then leaves: ``-lr * G/(H + lam)``, shared.

        The leaves' are the tree's weights; the internal nodes' are what the reason codes' path
        attribution needs (:func:`mpc_fl.models.reasons.tree_contributions`). One batch: the
        internal nodes cost a few more elements of the leaves' reciprocal, no round.
        """
        G = crypten.cat([g for g, _ in totals] + [leaves[0]])
        H = crypten.cat([h for _, h in totals] + [leaves[1]])
        return self._leaf_weights(G, H)

    def _leaf_weights(self, G: MPCTensor, H: MPCTensor) -> MPCTensor:
        """``-lr * G/(H + lam)``, secret-shared."""
        x = (H + self.params.reg_lambda).div(self.scale_)
        rr = RangeReduced(x, self.k_bits_, G * (-self.params.learning_rate))
        return rr.times_factor(rr.scaled).div(self.scale_)

    # ------------------------------------------------------------------ protocol
    def fit(self, ctx: Context, data: LocalData) -> None:
        p = self.params
        p.validate()
        if self.mask not in MASKS:
            raise ValueError(f"unknown mask {self.mask!r}; choose from {MASKS}")
        if self.oblivious and self.mask != "fixed":
            raise ValueError("oblivious=true routes rows with the fixed-mask bin matrices: use mask='fixed'")
        if p.reg_lambda <= 0:
            raise ValueError("ss_gbdt needs reg_lambda > 0 (empty leaves would divide by zero)")
        signs = own_signs(self.monotone, data)  # a name this party lacks fails before any traffic
        comm = crypten.communicator.get()
        self.rank_ = rank = ctx.rank
        self.n_parties_ = len(ctx.roles)
        self.roles_ = tuple(ctx.roles)  # rank order: run_info names parties by role
        n, nb = data.n_rows, p.n_bins
        with ctx.channel.phase("setup"):
            self.edges_ = quantile_bin_edges(data.X, nb)
            bins = apply_bins(data.X, self.edges_)
            widths = torch.zeros(self.n_parties_, dtype=torch.long)
            widths[rank] = data.X.shape[1]
            self.widths_ = comm.all_reduce(widths).tolist()  # feature counts are public
            if self.widths_[0] < 0 or sum(self.widths_[1:]) < 1:
                raise ValueError("the providers need at least one feature")
            # monotone constraints: public only that some party has any (it sets the protocol's shape)
            self.n_rows_ = n
            self.signs_ = signs
            self.monotone_ = reported(data.feature_names, signs)
            # only [some candidate is constrained] is opened: not which party, nor how many
            candidates = self._candidate_signs(signs)
            some = int((candidates.sum() >= 1).get_plain_text().item()) > 0
            self.mono_ = candidates if some else None
            # fixed masks: the one-hot bin matrix is never dense (the owner keeps its bin indices,
            # only the other parties hold its opening E), so a million rows fit in memory
            B = _one_hot_bins(bins, nb) if self.mask == "generic" else None
            self.hist_ops_ = []
            self.mats_: list[FixedMaskMatrix] = []
            mats = self.mats_
            for q, d_q in enumerate(self.widths_):
                shape = (n, d_q * nb)
                if self.mask == "fixed":
                    mine = bins if q == rank else None
                    fm = FixedMaskMatrix.one_hot(mine, nb, owner=q, n_rows=n, n_features=d_q)
                    mats.append(fm)
                    self.hist_ops_.append(fm.t_matmul)
                else:
                    eB = crypten.cryptensor(B if q == rank else torch.zeros(shape), src=q, precision=0)
                    self.hist_ops_.append(lambda U, eB=eB: eB.t().matmul(U))
            del B
            # public scales: x = (H + lam)/s <= 1 since H <= n/4; s_g^2 ~ s keeps gains ~ their true size
            self.scale_ = int(math.ceil(n / 4 + p.reg_lambda))
            self.scale_g_ = max(1, int(round(math.sqrt(self.scale_))))
            # range reduction only needs to cover valid candidates (H >= min_child_weight) and
            # non-empty leaves; on the others (masked out, or G = 0) Newton stays bounded
            x_min = (p.reg_lambda + p.min_child_weight) / self.scale_
            self.k_bits_ = max(0, math.ceil(math.log(1.0 / x_min, 16) - 1e-9) - 1)
            self.base_ = base_margin(data.y) if rank == 0 else None
            y = torch.from_numpy(data.y).float() if rank == 0 else torch.zeros(n)
            ey = crypten.cryptensor(y, src=0)
            margin = crypten.cryptensor(torch.full((n,), self.base_ if rank == 0 else 0.0), src=0)
        self.owners_: list[
            np.ndarray
        ] = []  # per tree, per internal node (heap order): owner rank or NO_SPLIT
        self.splits_: list[dict[int, tuple[int, int]]] = []  # per tree: node -> (own feature, bin)
        values, routes = [], []
        step: StepLabel = ctx.channel.ledger.step
        # every tree asks the dealer for the same list: one request per tree after the first
        prefetch = DealerPrefetch()
        self._picks: list[tuple[MPCTensor, ...]] = []  # per tree: one-hots, scores, G, raw values
        with ctx.channel.phase("training"), ctx.progress.task("training", p.n_trees, "tree") as tick:
            for _ in range(p.n_trees):
                with prefetch.block("tree"):
                    margin, v, owners_t, splits_t, route_t = self._fit_tree(margin, ey, bins, step)
                values.append(v)
                if self.oblivious:
                    routes.append(route_t)
                else:
                    self.owners_.append(owners_t)
                    self.splits_.append(splits_t)
                tick()
        n_internal = 2**p.max_depth - 1
        values_ = crypten.stack(values)  # (n_trees, 2^(depth + 1) - 1), secret-shared
        self.node_w_: MPCTensor | None = values_[:, :n_internal]  # the internal nodes' (reasons)
        self.leaf_w_ = values_[:, n_internal:]  # (n_trees, 2^depth)
        # oblivious mode: per party (and "no split"), (d_q*n_bins or 1, n_trees*(2^depth - 1)) shares
        self.routes_ = [crypten.cat(list(r), dim=1) for r in zip(*routes, strict=True)] if routes else []
        for m in mats:
            m.release()

    def decision_function(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        """Margins at the bank: each party marks the leaves its own splits allow, the marks are multiplied.

        A row reaches a leaf iff every split on the path sends it there; each party knows the
        splits it owns (and everyone knows that a no-split node sends everything left), so each
        party computes locally, per leaf, whether its own splits allow the leaf. The leaf a row
        reaches is the product of the parties' 0/1 marks: one secure product per extra party
        instead of one per tree level, then one with the shared leaf weights.
        """
        with ctx.channel.phase("scoring"):
            z = self._margins(data).get_plain_text(dst=0)  # only the bank learns margins
        if self.rank_ != 0:
            return None
        return z.double().numpy().ravel() + self.base_

    def prospect_margins(self, ctx: Context, data: LocalData) -> MPCTensor:
        """The shared margins of ``data``'s rows, base margin included (the bank adds it to its share)."""
        z = self._margins(data)
        return z + (float(self.base_) if self.rank_ == 0 else 0.0)  # a public addend counts at rank 0 only

    def _margins(self, data: LocalData) -> MPCTensor:
        """Shared margins without the base margin, in either mode; nothing is opened.

        The rows' leaf indicators are kept until the next call: reasons for the same rows
        (:meth:`reason_contributions`, right after scoring them) reuse them rather than route the
        rows again, which halves their cost and keeps the reasons' dealer requests the same for
        every query (the oblivious routing sets up fresh fixed masks).
        """
        self._restore()
        reach = self._reach(data)
        self._reached = (data, reach)
        return (reach * self.leaf_w_.reshape(-1)).sum(1)  # exact: 0/1 times weights

    def _reach(self, data: LocalData) -> MPCTensor:
        """(rows, trees x leaves) shared 0/1: the leaf each row reaches in each tree, leaves in heap order."""
        n, width = data.n_rows, self.params.n_trees * 2**self.params.max_depth
        if self.oblivious:
            return self._oblivious_reach(data)
        reach = None
        for q in range(self.n_parties_):
            mine = self._own_leaf_marks(data.X) if q == self.rank_ else torch.zeros(n, width)
            marks = crypten.cryptensor(mine, src=q, precision=0)
            reach = marks if reach is None else reach * marks  # exact: 0/1 at precision 0
        return reach

    def _oblivious_reach(self, data: LocalData) -> MPCTensor:
        """The leaves the test rows reach without revealing any split or path.

        Each party's test-row bin matrix is opened once under a fixed mask; the saved routing
        vectors give every node's left-indicator of every row in one product round, and the
        leaf a row reaches is the product of the indicators on its path (one round per level).
        """
        p = self.params
        n, nb, depth = data.n_rows, p.n_bins, p.max_depth
        n_nodes = 2**depth - 1
        bins = apply_bins(data.X, self.edges_)
        mats = [
            FixedMaskMatrix.one_hot(bins if q == self.rank_ else None, nb, owner=q, n_rows=n, n_features=d_q)
            for q, d_q in enumerate(self.widths_)
        ]
        ind = self._left_indicators(mats, self.routes_).reshape(n, p.n_trees, n_nodes)  # exact 0/1
        for m in mats:
            m.release()
        reach = None
        for level in range(depth):
            k = 2**level
            go_left = ind[:, :, k - 1 : 2 * k - 1]
            left = go_left if reach is None else reach * go_left  # exact
            right = (1 - go_left) if reach is None else reach - left
            reach = crypten.stack([left, right], dim=3).reshape(n, p.n_trees, 2 * k)
        return reach.reshape(n, -1)

    def reason_contributions(
        self, ctx: Context, data: LocalData, membership: np.ndarray, reference: np.ndarray
    ) -> MPCTensor:
        """Shares of each row's path attribution per unit (:func:`mpc_fl.models.reasons.tree_contributions`).

        Per tree, the change from each node's value to its child's (local on the shared values)
        times the 0/1 unit of the parent's split (:meth:`_split_units`) is summed along each leaf's
        path (a public linear map): ``(leaves, units)`` shares; each row's contributions are its
        shared leaf indicators times those (one matrix product). Nothing is opened, so in the
        oblivious mode the paths stay hidden; trees need no reference applicant.
        """
        from mpc_fl.crypto.reasons import unit_counts

        self._restore()
        if self.node_w_ is None:
            raise ValueError(
                "this model was trained before node values were kept: retrain it for reason codes"
            )
        depth, n_trees = self.params.max_depth, self.params.n_trees
        n_internal, n_leaves = 2**depth - 1, 2**depth
        counts = unit_counts(self.rank_, membership.shape[1])
        units = self._split_units(membership, counts)  # (trees, internal nodes, units), 0/1
        child = torch.arange(1, 2 * n_internal + 1)
        parent = (child - 1) // 2
        values = crypten.cat([self.node_w_, self.leaf_w_], dim=1)
        change = on_shares(values, lambda s: s[:, child] - s[:, parent])  # (trees, edges)
        at_parent = on_shares(units, lambda s: s[:, parent])  # (trees, edges, units)
        by_edge = change.unsqueeze(2) * at_parent  # exact: 0/1 at precision 0
        path = torch.zeros(n_leaves, len(child), dtype=torch.long)  # leaf l's path, by edge (child node)
        for leaf in range(n_leaves):
            node = n_internal + leaf
            while node > 0:
                path[leaf, node - 1] = 1
                node = (node - 1) // 2
        by_leaf = on_shares(by_edge, lambda s: torch.einsum("le,teu->tlu", path, s))
        reached = getattr(self, "_reached", None)
        reach = reached[1] if reached is not None and reached[0] is data else self._reach(data)
        self._reached = None
        return reach.matmul(by_leaf.reshape(n_trees * n_leaves, sum(counts)))

    def _split_units(
        self,
        membership: np.ndarray,
        counts: list[int],
        splits: list[dict[int, tuple[int, int]]] | None = None,
        routes: list[MPCTensor] | None = None,
    ) -> MPCTensor:
        """(trees, internal nodes, units) shared 0/1: the unit of each node's split feature (0 if none).

        Of the saved model's trees, or of the trees whose ``splits`` (default mode) or ``routes``
        (oblivious mode) are given (training's current tree).

        Default mode: a split's owner knows its feature, so it inputs its own nodes' rows
        (``membership[f]``) and zeros elsewhere; the others learn nothing they did not know (the
        owners are public). Oblivious mode: the routing vectors' bin-0 entries are the shared
        one-hot of each node's feature (suffix sums over all its bins), so each party's grouping,
        a private input, times them gives its units (one product round).
        """
        splits = self.splits_ if splits is None else splits
        routes = self.routes_ if routes is None else routes
        n_internal, nb = 2**self.params.max_depth - 1, self.params.n_bins
        n_trees = routes[0].size(1) // n_internal if self.oblivious else len(splits)
        parts = []
        for q, g_q in enumerate(counts):
            mine = q == self.rank_
            A = torch.from_numpy(np.asarray(membership, dtype=np.float32)) if mine else None
            if self.oblivious:
                A_q = crypten.cryptensor(A if mine else torch.zeros(self.widths_[q], g_q), src=q, precision=0)
                feature = on_shares(routes[q], lambda s: s[0::nb])  # (d_q, trees x nodes)
                parts.append(A_q.t().matmul(feature).t().reshape(n_trees, n_internal, g_q))
                continue
            rows = torch.zeros(n_trees, n_internal, g_q)
            if mine:
                for t, tree_splits in enumerate(splits):
                    for node, (f, _) in tree_splits.items():
                        rows[t, node] = A[f]
            parts.append(crypten.cryptensor(rows, src=q, precision=0))
        return crypten.cat(parts, dim=2)

    def _own_leaf_marks(self, X: np.ndarray) -> torch.Tensor:
        """(rows, trees x leaves) 0/1: the leaves this party's own splits (and, at the bank, the public
        no-split nodes) let each row reach; leaves in heap order, tree by tree."""
        depth = self.params.max_depth
        n_leaves = 2**depth
        bins = apply_bins(X, self.edges_)
        marks = np.ones((len(X), len(self.owners_), n_leaves), dtype=bool)
        for t, owners in enumerate(self.owners_):
            for node, owner in enumerate(owners):
                level = int(np.log2(node + 1))
                span = n_leaves >> level  # leaves below this node
                lo = (node - (2**level - 1)) * span
                mid, hi = lo + span // 2, lo + span
                if owner == self.rank_:
                    f, b = self.splits_[t][node]
                    left = (bins[:, f] <= b)[:, None]
                    marks[:, t, lo:mid] &= left
                    marks[:, t, mid:hi] &= ~left
                elif owner == NO_SPLIT and self.rank_ == 0:
                    marks[:, t, mid:hi] = False  # everything goes left: public
        return torch.from_numpy(marks.reshape(len(X), -1).astype(np.float32))

    # ------------------------------------------------------------------ saved model
    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Public tree shapes and owners; this party's own splits and bin edges; its shares of the leaf weights."""
        self._restore()
        meta = {
            "rank": self.rank_,
            "n_parties": self.n_parties_,
            "roles": list(self.roles_),
            "widths": list(self.widths_),
            "owners": [o.tolist() for o in self.owners_],
            "splits": [{str(k): list(v) for k, v in s.items()} for s in self.splits_],
            "base": self.base_,
            "precision": precision(self.leaf_w_),
            "oblivious": self.oblivious,
            "n_routes": len(self.routes_),
        }
        arrays = {f"edges_{j}": e for j, e in enumerate(self.edges_)}
        arrays["leaf_w_share"] = self.leaf_w_.share.numpy().copy()
        if self.node_w_ is not None:
            arrays["node_w_share"] = self.node_w_.share.numpy().copy()
        for j, r in enumerate(self.routes_):  # oblivious mode: shares of the routing vectors
            arrays[f"route_share_{j}"] = r.share.numpy().copy()
        return meta, arrays

    def import_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        self.rank_, self.n_parties_ = int(meta["rank"]), int(meta["n_parties"])
        self.roles_, self.widths_ = tuple(meta["roles"]), list(meta["widths"])
        self.owners_ = [np.asarray(o, dtype=np.int64) for o in meta["owners"]]
        self.splits_ = [{int(k): (int(f), int(b)) for k, (f, b) in s.items()} for s in meta["splits"]]
        self.base_ = meta["base"]
        self.edges_ = [arrays[f"edges_{j}"] for j in range(self.widths_[self.rank_])]
        self.oblivious = bool(meta.get("oblivious", False))
        if self.oblivious:
            self.leakage = self.OBLIVIOUS_LEAKAGE
        routes = [arrays[f"route_share_{j}"] for j in range(int(meta.get("n_routes", 0)))]
        self._saved = (int(meta["precision"]), arrays["leaf_w_share"], routes, arrays.get("node_w_share"))

    def _restore(self) -> None:
        """Saved shares (leaf weights, oblivious routing vectors) back into CrypTen tensors."""
        saved = getattr(self, "_saved", None)
        if saved is not None:
            self.leaf_w_ = MPCTensor.from_shares(torch.from_numpy(saved[1].copy()), precision=saved[0])
            # a part saved before node values were kept scores as before, and gives no reasons
            self.node_w_ = None
            if saved[3] is not None:
                self.node_w_ = MPCTensor.from_shares(torch.from_numpy(saved[3].copy()), precision=saved[0])
            self.routes_ = [MPCTensor.from_shares(torch.from_numpy(r.copy()), precision=0) for r in saved[2]]
            self._saved = None
