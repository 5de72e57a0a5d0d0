"""SecureBoost (Cheng et al. 2021) with the SecureBoost+ ciphertext optimisations, two parties.

Same model as :class:`mpc_fl.models.gbdt.PlainGBDT` on the joined features (bank's features first, then the
provider's): same per-party quantile binning, gains, ``min_child_weight``, complete trees, NO_SPLIT rule,
tie-break (first maximum in joint (feature, bin) order), leaf weights and base margin.

Protocol, per tree (bank = active party with labels and the Paillier key; provider = passive party):

1. the bank computes ``g, h`` of every training row, packs ``(1, g + 1, h)`` into one fixed-point plaintext per
   row (``GHPacker``, ``FRAC_BITS`` fraction bits, slots sized from the key's plaintext space) and sends them
   encrypted with fresh randomness, in parallel on all cores (HEU's thread pool). The key is of the run's
   ``scheme``: OU (SecretFlow SGB's default; 3072 bits unless ``key_bits`` says otherwise) or ZPaillier (2048),
   never below :data:`~mpc_fl.crypto.paillier.MIN_KEY_BITS` = 2048 bits: the bank refuses to generate a
   shorter one and the provider refuses to load one, or one of another scheme;
2. level by level, for each node the provider builds the encrypted bin histogram of its features over the
   node's instance space (HEU ``feature_wise_bucket_sum``). Below the root it computes only the smaller child of
   each sibling pair (one batched native call per level) and gets the other one as ``parent - child``
   (histogram subtraction). Each node's histogram is folded into few ciphertexts (cipher compression,
   ``squeeze``), which are re-randomised (a fresh ``[[0]]`` added to each) before they are sent;
3. the bank decrypts, refuses any plaintext outside the packed range (so an overflowed OU ciphertext is never
   used; see :mod:`mpc_fl.crypto.paillier`), unpacks (G, H, count) per provider bin, computes its own histograms in plaintext,
   and picks the best split over the joint feature list. For a provider-owned split it sends (node, local
   feature, bin) to the provider, which keeps the threshold and returns which of the node's rows go right;
   the bank then sends the provider the partition of the whole level (so it knows every node's rows);
4. leaf weights (from plaintext g, h) stay at the bank, which updates the margins.

Scoring: the provider sends, for every test row and every node it owns, its decision bit (x >= threshold);
the bank routes the rows through the trees and alone learns the scores.

Threat model: semi-honest bank and provider, no third party; OU or Paillier (HEU), keys of at least 2048 bits
(security per size: :data:`mpc_fl.crypto.paillier.SCHEMES`). Both schemes reveal the same things; OU's smaller
plaintext space packs fewer bins per ciphertext (3072-bit OU: 1023-bit plaintexts, 9 bins of 108 bits at
default_credit sizes; 2048-bit ZPaillier: 2046 bits, 18 bins), yet each operation is several times cheaper.

What is taken from SecretFlow SGB / SecureBoost+ and what not: taken: OU as the default scheme, GH packing
(g, h and a count in one plaintext), cipher compression of histogram bins, histogram subtraction (only the
smaller child computed), one batched native histogram call per level, encryption and histograms on every core
(HEU's thread pool). Not taken, because they change the model the baselines are compared on: gradient
quantisation to fewer bits, GOSS/row sampling, feature sampling, and early stopping.

What each party learns beyond its own inputs and outputs:

* bank: per node, the per-bin sums of g and h and the row counts of each provider feature (which imply the
  provider's bin-level ordering of the node's rows in aggregate); the owner, local feature index and bin index
  of every split; the instance space of every node (including the provider's left/right partitions); at
  scoring, the provider's decision bit at every provider-owned node for every test row; the whole model except
  the provider's thresholds; with reason codes, the unit (at the provider's release level) of each split the
  provider owns, so the bank attributes every path itself. Nothing more from the histogram ciphertexts themselves: they are re-randomised.
  Without that, each is a deterministic product of the bank's own per-row ciphertexts (whose randomness the
  bank knows), so the bank could test which rows fell into which provider bin, i.e. the provider's per-row
  bin-level ordering rather than only its per-bin aggregates.
* provider: the instance space of every node of every tree during training (hence which training rows end in
  the same leaf) and which nodes it owns with their (feature, threshold); public sizes. Never g, h or labels
  in the clear, nor leaf weights or scores.
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np

from mpc_fl.crypto.paillier import (
    DEFAULT_SCHEME,
    GHPacker,
    HeuBackend,
    check_he_options,
    resolve_key_bits,
    unsqueeze,
)
from mpc_fl.models.gbdt import (
    NO_SPLIT,
    GBDTParams,
    Tree,
    apply_bins,
    base_margin,
    best_split,
    constrain_tree,
    histograms,
    importance,
    leaf_weight,
    logistic_grad_hess,
    quantile_bin_edges,
    split_gains,
    stack_trees,
    unstack_trees,
)
from mpc_fl.models.monotone import own_signs, reported
from mpc_fl.protocols.base import BANK, Context, LocalData, VerticalProtocol, two_party_peer
from mpc_fl.runtime.ledger import Traffic

#: fixed-point fraction bits of packed g and h (FATE packs with 53; 32 keeps sums exact to ~1e-9 per row)
FRAC_BITS = 32


def _pack_bits(a: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(a, dtype=bool).ravel())


def _unpack_bits(a: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(a, count=count).astype(bool)


class SecureBoost(VerticalProtocol):
    name = "secureboost"
    threat_model: ClassVar[str] = (
        "semi-honest bank and provider; OU (default, 3072-bit) or Paillier (DCRA + DJN short exponent, 2048-bit), "
        ">= 2048-bit keys; no third party"
    )
    leakage: ClassVar[dict[str, str]] = {
        "bank": "per-node per-bin G/H sums and counts of provider features (re-randomised ciphertexts, no more); "
        "split owner/feature/bin index; "
        "every node's instance space; provider decision bits of every test row at provider nodes; with reason "
        "codes, the reason unit of each provider split (at the provider's release level); the provider's "
        "monotone constraints (the bank picks every split in the clear)",
        "provider": "every node's instance space in training; its own split features and thresholds; with "
        "--importance, the total gain and split count of each of its features",
    }

    def __init__(
        self,
        params: GBDTParams = GBDTParams(),  # noqa: B008 (frozen)
        *,
        scheme: str = DEFAULT_SCHEME,
        key_bits: int = 0,
        monotone: str = "",
    ):
        check_he_options({"scheme": scheme, "key_bits": key_bits})
        self.params, self.monotone = params, monotone
        self.scheme = scheme
        self.key_bits = resolve_key_bits(scheme, key_bits)

    def params_dict(self) -> dict:
        return {**self.params.to_dict(), "scheme": self.scheme, "key_bits": self.key_bits}

    def feature_importance(self, ctx: Context) -> dict[str, np.ndarray]:
        """The bank picks every split in the clear, so it computes every feature's importance and sends
        the provider its own (the provider learns its features' total gains: label information)."""
        peer = two_party_peer(ctx, self.name)
        if ctx.role != BANK:
            return ctx.channel.recv_arrays(peer)
        d_b = len(self.edges_)
        every = importance(self.trees_, d_b + self.n_provider_features_)
        ctx.channel.send_arrays(peer, **{k: v[d_b:] for k, v in every.items()})
        return {k: v[:d_b] for k, v in every.items()}

    def run_info(self) -> dict:
        """This party's own monotone constraints, if any (the bank's record does not repeat the provider's)."""
        return dict(getattr(self, "monotone_", {}))

    # ------------------------------------------------------------------------------------------------------
    def fit(self, ctx: Context, data: LocalData) -> None:
        p = self.params
        p.validate()
        signs = own_signs(self.monotone, data)
        self.monotone_ = reported(data.feature_names, signs)
        peer = two_party_peer(ctx, self.name)
        ch = ctx.channel
        n = data.n_rows
        with ch.phase("setup"):
            self.edges_ = quantile_bin_edges(data.X, p.n_bins)  # each party bins its own features
            bins = apply_bins(data.X, self.edges_)
            if ctx.role == BANK:
                if data.y is None:
                    raise ValueError("the bank must hold the labels")
                he = HeuBackend.generate(self.key_bits, self.scheme)
                ch.send_bytes(peer, he.public_key_bytes())
                info = ch.recv_json(peer)
                if int(info["n_rows"]) != n:
                    raise ValueError("bank and provider disagree on the number of aligned rows")
                self.n_provider_features_ = int(info["n_features"])
                theirs = np.asarray(info.get("monotone", [0] * self.n_provider_features_), dtype=np.int64)
                joint = np.concatenate([signs, theirs])
                self.joint_signs_ = joint if joint.any() else None
            else:
                he = HeuBackend.from_public_key(ch.recv_bytes(peer), self.scheme)
                ch.send_json(peer, {"n_features": data.X.shape[1], "n_rows": n, "monotone": signs.tolist()})
            packer = GHPacker(n, he.plaintext_bits, frac_bits=FRAC_BITS)
        self.history_: list[dict] = []
        led = ch.ledger
        with ch.phase("training"), ctx.progress.task("training", p.n_trees, "tree") as self._tick:
            if ctx.role == BANK:
                self._fit_bank(ch, peer, he, packer, bins, data.y, led)
            else:
                self._fit_provider(ch, peer, he, packer, bins, led)
        del self._tick

    def _record(self, t: int, t0: float, tr: Traffic, s0: int, r0: int, led) -> None:  # noqa: ANN001
        led.flush()
        self.history_.append(
            {
                "tree": t,
                "s": time.perf_counter() - t0,
                "bytes_sent": tr.bytes_sent - s0,
                "bytes_recv": tr.bytes_recv - r0,
            }
        )
        self._tick()

    def _fit_bank(self, ch, peer, he, packer, bins, y, led) -> None:  # noqa: ANN001
        p = self.params
        n, d_b = bins.shape
        d_p, nb = self.n_provider_features_, p.n_bins
        depth, n_internal = p.max_depth, 2**p.max_depth - 1
        self.base_margin_ = base_margin(y)
        margin = np.full(n, self.base_margin_)
        self.trees_: list[Tree] = []
        for t in range(p.n_trees):
            t0 = time.perf_counter()
            tr = led.by_phase.setdefault("training", Traffic())
            s0, r0 = tr.bytes_sent, tr.bytes_recv
            g, h = logistic_grad_hess(y, margin)
            ch.send_bytes(peer, he.serialize(he.encrypt(packer.pack(g, h))))
            tree = Tree(
                depth,
                np.full(n_internal, NO_SPLIT),
                np.full(n_internal, NO_SPLIT),
                np.zeros(2**depth),
                np.zeros(n_internal),
                np.zeros(n_internal),
            )
            node_of_row = np.zeros(n, dtype=np.int64)
            for level in range(depth):
                go_right = np.zeros(n, dtype=bool)
                asks, ask_rows = [], []
                for node in range(2**level - 1, 2 ** (level + 1) - 1):
                    rows = np.flatnonzero(node_of_row == node)
                    tree.node_values[node] = p.learning_rate * leaf_weight(
                        g[rows].sum(), h[rows].sum(), p.reg_lambda
                    )
                    Gb, Hb = histograms(bins[rows], nb, g[rows], h[rows])
                    sq = he.deserialize(ch.recv_bytes(peer))
                    vals = unsqueeze(
                        he.decrypt_big(sq), packer.bits_per_value, packer.values_per_ct, d_p * nb
                    )
                    Gp, Hp, _ = packer.unpack(vals)
                    G = np.vstack([Gb, Gp.reshape(d_p, nb)])
                    H = np.vstack([Hb, Hp.reshape(d_p, nb)])
                    gains = split_gains(G, H, p.reg_lambda, p.min_child_weight, self.joint_signs_)
                    f, b = best_split(gains)
                    tree.feature[node], tree.bin[node] = f, b
                    tree.gains[node] = 0.0 if f == NO_SPLIT else gains[f, b]
                    if f == NO_SPLIT:
                        continue
                    if f < d_b:
                        go_right[rows] = bins[rows, f] > b
                    else:
                        asks.append([node, int(f - d_b), int(b)])
                        ask_rows.append(rows)
                ch.send_json(peer, asks)
                if asks:
                    flat = np.concatenate(ask_rows)
                    go_right[flat] = _unpack_bits(ch.recv_arrays(peer)["bits"], len(flat))
                if level < depth - 1:
                    ch.send_arrays(peer, go_right=_pack_bits(go_right))
                node_of_row = 2 * node_of_row + 1 + go_right
            leaf = node_of_row - n_internal
            G_leaf = np.bincount(leaf, weights=g, minlength=2**depth)
            H_leaf = np.bincount(leaf, weights=h, minlength=2**depth)
            tree.leaf_values = p.learning_rate * leaf_weight(G_leaf, H_leaf, p.reg_lambda)
            if self.joint_signs_ is not None:
                constrain_tree(tree, self.joint_signs_)
            margin += tree.leaf_values[leaf]
            self.trees_.append(tree)
            self._record(t, t0, tr, s0, r0, led)

    def _fit_provider(self, ch, peer, he, packer, bins, led) -> None:  # noqa: ANN001
        p = self.params
        n = bins.shape[0]
        nb, depth = p.n_bins, p.max_depth
        #: per tree: {node: (local feature, bin)} of the splits this party owns (threshold = edges_[f][b])
        self.splits_: list[dict[int, tuple[int, int]]] = []
        for t in range(p.n_trees):
            t0 = time.perf_counter()
            tr = led.by_phase.setdefault("training", Traffic())
            s0, r0 = tr.bytes_sent, tr.bytes_recv
            ct = he.deserialize(ch.recv_bytes(peer))
            mine: dict[int, tuple[int, int]] = {}
            node_of_row = np.zeros(n, dtype=np.int64)
            parent_hists: dict[int, object] = {}
            for level in range(depth):
                nodes = range(2**level - 1, 2 ** (level + 1) - 1)
                if level == 0:
                    hists = {0: he.bucket_sum(ct, bins, nb)}
                else:
                    counts = np.bincount(node_of_row, minlength=2 ** (level + 1) - 1)
                    small, big, parents = [], [], []
                    for parent in range(2 ** (level - 1) - 1, 2**level - 1):
                        left, right = 2 * parent + 1, 2 * parent + 2
                        s, o = (left, right) if counts[left] <= counts[right] else (right, left)
                        small.append(s)
                        big.append(o)
                        parents.append(parent)
                    rows_list = [node_of_row == s for s in small]
                    small_h = he.batch_bucket_sum(ct, bins, nb, rows_list)
                    hists = {}
                    for s, o, parent, hs in zip(small, big, parents, small_h, strict=True):
                        hists[s] = hs
                        hists[o] = he.sub(parent_hists[parent], hs)
                for node in nodes:
                    sq = he.squeeze(hists[node], packer.bits_per_value, packer.values_per_ct)
                    # fresh randomness: otherwise sq is a deterministic function of the bank's ciphertexts
                    # and of which rows fell into which of this party's bins
                    ch.send_bytes(peer, he.serialize(he.rerandomize(sq)))
                asks = ch.recv_json(peer)
                if asks:
                    out = []
                    for node, f, b in asks:
                        mine[int(node)] = (int(f), int(b))
                        rows = np.flatnonzero(node_of_row == node)
                        out.append(bins[rows, f] > b)
                    ch.send_arrays(peer, bits=_pack_bits(np.concatenate(out)))
                if level < depth - 1:
                    go_right = _unpack_bits(ch.recv_arrays(peer)["go_right"], n)
                    node_of_row = 2 * node_of_row + 1 + go_right
                parent_hists = hists
            self.splits_.append(mine)
            self._record(t, t0, tr, s0, r0, led)

    # ------------------------------------------------------------------------------------------------------
    def decision_function(self, ctx: Context, data: LocalData) -> np.ndarray | None:
        with ctx.channel.phase("scoring"):
            paths = self._paths(ctx, data)
        if paths is None:
            return None
        margin = np.full(data.n_rows, self.base_margin_)
        for tree, nodes in zip(self.trees_, paths, strict=True):
            margin += tree.leaf_values[nodes[-1] - len(tree.feature)]
        return margin

    def reason_contributions(
        self, ctx: Context, data: LocalData, membership: np.ndarray, reference: np.ndarray
    ) -> np.ndarray | None:
        """Path attribution at the bank (:func:`mpc_fl.models.reasons.tree_contributions`), in the clear.

        The bank already routes every row and knows every node's value; the provider adds, for
        each split it owns, the index of the unit its feature belongs to (under ``none`` always
        the one unit), so the bank learns that much more and nothing of the features themselves.
        """
        peer = two_party_peer(ctx, self.name)
        ch = ctx.channel
        if ctx.role != BANK:
            owned = [f for sp in self.splits_ for _, (f, _) in sorted(sp.items())]
            unit = np.argmax(membership[owned], axis=1) if owned else np.zeros(0, dtype=np.int64)
            ch.send_arrays(peer, unit=unit.astype(np.int64), n_units=np.array([membership.shape[1]]))
            self._paths(ctx, data)
            return None
        got = ch.recv_arrays(peer)
        paths = self._paths(ctx, data)
        d_b, g_b = membership.shape
        units = np.concatenate([membership, np.zeros((d_b, int(got["n_units"][0])))], axis=1)
        provider_units = iter(got["unit"].tolist())
        out = np.zeros((data.n_rows, units.shape[1]))
        for tree, nodes in zip(self.trees_, paths, strict=True):
            unit_of = np.zeros((len(tree.feature), units.shape[1]))  # per node: the unit its split counts to
            for node, f in enumerate(tree.feature.tolist()):
                if f == NO_SPLIT:
                    continue
                if f < d_b:
                    unit_of[node] = units[f]
                else:
                    unit_of[node, g_b + next(provider_units)] = 1.0
            values = tree.path_values()
            for parent, child in zip(nodes[:-1], nodes[1:], strict=True):
                out += (values[child] - values[parent])[:, None] * unit_of[parent]
        return out

    def _paths(self, ctx: Context, data: LocalData) -> list[list[np.ndarray]] | None:
        """At the bank, per tree, the node every row visits at each level (root first, leaf last);
        the provider sends its decision bit of every row at every node it owns."""
        peer = two_party_peer(ctx, self.name)
        ch = ctx.channel
        bins = apply_bins(data.X, self.edges_)
        m = data.n_rows
        if ctx.role != BANK:
            cols = [bins[:, f] > b for sp in self.splits_ for _, (f, b) in sorted(sp.items())]
            mat = np.stack(cols, axis=1) if cols else np.zeros((m, 0), dtype=bool)
            ch.send_arrays(peer, bits=_pack_bits(mat), shape=np.array(mat.shape))
            return None
        z = ch.recv_arrays(peer)
        n_cols = int(z["shape"][1])
        pbits = _unpack_bits(z["bits"], m * n_cols).reshape(m, n_cols)
        d_b = bins.shape[1]
        col = 0
        idx = np.arange(m)
        out = []
        for tree in self.trees_:
            n_internal = len(tree.feature)
            decide = np.zeros((m, n_internal), dtype=bool)
            for node in range(n_internal):
                f, b = int(tree.feature[node]), int(tree.bin[node])
                if f == NO_SPLIT:
                    continue
                if f < d_b:
                    decide[:, node] = bins[:, f] > b
                else:
                    decide[:, node] = pbits[:, col]
                    col += 1
            nodes = [np.zeros(m, dtype=np.int64)]
            for _ in range(tree.depth):
                nodes.append(2 * nodes[-1] + 1 + decide[idx, nodes[-1]])
            out.append(nodes)
        if col != n_cols:
            raise ValueError("provider decision bits do not match the model's provider nodes")
        return out

    def prospect_margins(self, ctx: Context, data: LocalData):  # noqa: ANN201 - an MPCTensor
        """Shared margins of the provider's rows under a prospect model (every split the provider's).

        The provider routes its rows itself (it knows its splits, and every other node of a
        prospect model is a no-split node, which sends all rows left) and inputs the leaf each row
        reaches in each tree as a one-hot fixed-mask matrix; the bank inputs the leaf values as
        shares; one product gives the shared margins. The bank sees only the masked matrix, the
        provider only shares: neither learns a margin. Uses the dealer (SecureBoost's own training
        has none): its one opening is n x (trees * 2^depth) ring elements.
        """
        import torch

        from mpc_fl.crypto.fixed_mask import FixedMaskMatrix
        from mpc_fl.crypto.secure_crypten import crypten

        peer = two_party_peer(ctx, self.name)
        depth, m = self.params.max_depth, data.n_rows
        n_leaves, n_internal = 2**depth, 2**depth - 1
        provider = ctx.roles.index(peer if ctx.role == BANK else ctx.role)
        if ctx.role == BANK:
            d_b = len(self.edges_)
            if any(np.any((t.feature != NO_SPLIT) & (t.feature < d_b)) for t in self.trees_):
                raise ValueError(
                    "this SecureBoost model splits on the bank's features; a prospect is not a bank "
                    "customer: train a prospect model (--features providers)"
                )
            n_trees, leaves = len(self.trees_), None
            values = torch.from_numpy(np.concatenate([t.leaf_values for t in self.trees_]))
        else:
            bins = apply_bins(data.X, self.edges_)
            n_trees, values = len(self.splits_), None
            leaves = np.zeros((m, n_trees), dtype=np.int64)
            for j, mine in enumerate(self.splits_):
                feature = np.full(n_internal, NO_SPLIT, dtype=np.int64)
                threshold = np.zeros(n_internal, dtype=np.int64)
                for node, (f, b) in mine.items():
                    feature[node], threshold[node] = f, b
                leaves[:, j] = Tree(depth, feature, threshold, np.zeros(n_leaves)).leaf_index(bins)
        onehot = FixedMaskMatrix.one_hot(
            leaves, n_leaves, owner=provider, n_rows=m, n_features=n_trees
        )  # fmt: skip
        w = crypten.cryptensor(values if values is not None else torch.zeros(n_trees * n_leaves), src=0)
        z = onehot.matmul(w)
        onehot.release()
        return z + (float(self.base_margin_) if ctx.role == BANK else 0.0)

    # ------------------------------------------------------------------ saved model
    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Bank: the trees (provider splits as feature and bin index only) and leaf values; provider:
        its own splits. Each party: its own bin edges (thresholds)."""
        arrays = {f"edges_{j}": e for j, e in enumerate(self.edges_)}
        if hasattr(self, "trees_"):
            arrays |= stack_trees(self.trees_)
            return {
                "n_edges": len(self.edges_),
                "base_margin": self.base_margin_,
                "depth": self.params.max_depth,
            }, arrays
        splits = [{str(k): list(v) for k, v in s.items()} for s in self.splits_]
        return {"n_edges": len(self.edges_), "splits": splits}, arrays

    def import_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        self.edges_ = [arrays[f"edges_{j}"] for j in range(int(meta["n_edges"]))]
        if "leaf_values" in arrays:
            depth = int(meta["depth"])
            self.base_margin_ = meta["base_margin"]
            self.trees_ = unstack_trees(depth, arrays)
        else:
            self.splits_ = [{int(k): (int(f), int(b)) for k, (f, b) in s.items()} for s in meta["splits"]]
