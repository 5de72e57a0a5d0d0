"""Histogram gradient-boosted trees: the one algorithm that SecureBoost and SS-GBDT both run.

Why a project-own GBDT: the secure protocols can only be checked against a plaintext
model that makes exactly the same decisions. The pieces here are pure array functions
(binning, histograms, gains, leaf weights) that the secure protocols reuse or mirror:

* quantile binning per feature on the training rows (each party bins its own features);
* a split "bin <= b goes left" (threshold ``edges[b]``: ``x < edges[b]`` goes left);
* XGBoost's second-order gain ``G_L^2/(H_L+lam) + G_R^2/(H_R+lam) - G^2/(H+lam)``, with
  ``min_child_weight`` on both children, and leaf weight ``-G/(H+lam)`` times the learning rate;
* complete trees: every node at depth < max_depth takes its best valid split, even one
  with gain <= 0 (a secure protocol would leak where it stops otherwise); a node with no
  valid split sends all rows left. Empty leaves get weight 0;
* monotone constraints (:mod:`mpc_fl.models.monotone`) as XGBoost enforces them: a split on a
  constrained feature whose children's weights go the wrong way is not valid, and once a tree is
  grown every node's weight is clipped to bounds its ancestors set (:func:`constrain_tree`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mpc_fl.models.params import check_declared, param

NO_SPLIT = -1


@dataclass(frozen=True)
class GBDTParams:
    n_trees: int = param(20, "boosting rounds", at_least=1)
    max_depth: int = param(4, "depth of every (complete) tree", at_least=1)
    learning_rate: float = param(0.3, "shrinkage applied to each leaf weight", above=0)
    n_bins: int = param(
        32, "quantile bins per feature, drawn by each party on its own rows", at_least=2, at_most=127
    )
    reg_lambda: float = param(1.0, "L2 regularisation of leaf weights (lambda)", at_least=0)
    min_child_weight: float = param(
        1.0, "least hessian sum a child must keep for a split to be valid", at_least=0
    )

    def validate(self) -> None:
        check_declared(self)

    def to_dict(self) -> dict:
        return asdict(self)


def quantile_bin_edges(X: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Per feature, the distinct inner quantiles of the training rows (at most n_bins - 1 edges)."""
    levels = np.arange(1, n_bins) / n_bins
    edges = []
    for col in X.T:
        q = np.unique(np.quantile(col, levels, method="lower"))
        edges.append(q[q > col.min()])  # an edge at the minimum would leave an empty bin
    return edges


def apply_bins(X: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Bin index per cell (int8): the number of edges <= x, so ``x < edges[b]`` <=> bin <= b."""
    out = np.empty(X.shape, dtype=np.int8)
    for j, e in enumerate(edges):
        out[:, j] = np.searchsorted(e, X[:, j], side="right")
    return out


def histograms(bins: np.ndarray, n_bins: int, g: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (feature, bin) sums of g and h over the given rows: arrays of shape (n_features, n_bins)."""
    n, d = bins.shape
    flat = (bins.astype(np.int64) + np.arange(d) * n_bins).ravel()
    G = np.bincount(flat, weights=np.repeat(g, d), minlength=d * n_bins).reshape(d, n_bins)
    H = np.bincount(flat, weights=np.repeat(h, d), minlength=d * n_bins).reshape(d, n_bins)
    return G, H


def split_gains(
    G: np.ndarray,
    H: np.ndarray,
    reg_lambda: float,
    min_child_weight: float,
    monotone: np.ndarray | None = None,
) -> np.ndarray:
    """Gain of each candidate split "bin <= b goes left", shape (n_features, n_bins - 1); -inf if invalid.

    ``monotone`` (+1/-1/0 per feature): a split on a constrained feature is invalid when its left
    child's weight ``-G_L/(H_L+lam)`` lies above (+1) or below (-1) its right child's. The test
    is the sign of ``G_R (H_L+lam) - G_L (H_R+lam)`` (both denominators are positive), which a
    secure protocol computes with two products and no division.
    """
    GL, HL = np.cumsum(G, axis=1)[:, :-1], np.cumsum(H, axis=1)[:, :-1]
    Gt, Ht = G.sum(axis=1, keepdims=True), H.sum(axis=1, keepdims=True)
    GR, HR = Gt - GL, Ht - HL
    gain = GL**2 / (HL + reg_lambda) + GR**2 / (HR + reg_lambda) - Gt**2 / (Ht + reg_lambda)
    valid = (HL >= min_child_weight) & (HR >= min_child_weight)
    if monotone is not None:
        d = GR * (HL + reg_lambda) - GL * (HR + reg_lambda)  # sign of w_L - w_R
        c = np.asarray(monotone).reshape(-1, 1)
        valid &= ~(((c > 0) & (d > 0)) | ((c < 0) & (d < 0)))
    return np.where(valid, gain, -np.inf)


def constrain_tree(tree: Tree, monotone: np.ndarray) -> None:
    """Clip every node's value to the bounds its ancestors' constrained splits set (XGBoost's), in place.

    Top down from unbounded at the root: a split on a feature constrained +1 caps its left
    subtree at, and floors its right subtree at, the midpoint of its two children's values
    (each first clipped to the split node's own bounds); -1 the other way round. A split on an
    unconstrained feature (or no split) passes its bounds on. So for two rows that differ only
    in a +1 feature, the split where their paths part puts the smaller row's leaf at or below
    the midpoint and the larger's at or above it: each tree, and so their sum, is monotone.
    Values are the learning-rate-scaled ones (a positive factor: the same bounds).
    """
    raw = tree.path_values()
    n_internal = len(tree.feature)
    lo, hi = np.full(len(raw), -np.inf), np.full(len(raw), np.inf)
    for k in range(n_internal):
        left, right = 2 * k + 1, 2 * k + 2
        lo[left] = lo[right] = lo[k]
        hi[left] = hi[right] = hi[k]
        c = 0 if tree.feature[k] == NO_SPLIT else int(monotone[tree.feature[k]])
        if c == 0:
            continue
        mid = (np.clip(raw[left], lo[k], hi[k]) + np.clip(raw[right], lo[k], hi[k])) / 2
        if c > 0:
            hi[left], lo[right] = mid, mid
        else:
            lo[left], hi[right] = mid, mid
    out = np.clip(raw, lo, hi)
    tree.node_values, tree.leaf_values = out[:n_internal], out[n_internal:]


def best_split(gains: np.ndarray) -> tuple[int, int]:
    """(feature, bin) of the largest gain, first in row-major order on ties; NO_SPLIT if none is valid."""
    flat = int(np.argmax(gains))
    if not np.isfinite(gains.flat[flat]):
        return NO_SPLIT, NO_SPLIT
    return divmod(flat, gains.shape[1])


def leaf_weight(G: float | np.ndarray, H: float | np.ndarray, reg_lambda: float) -> float | np.ndarray:
    return -G / (H + reg_lambda)


def logistic_grad_hess(y: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = 1.0 / (1.0 + np.exp(-margin))
    return p - y, p * (1.0 - p)


def base_margin(y: np.ndarray) -> float:
    """Initial log-odds: the bank's own label mean, known to it alone."""
    m = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
    return float(np.log(m / (1 - m)))


@dataclass
class Tree:
    """A complete binary tree in heap order: node k has children 2k+1 and 2k+2.

    ``feature``/``bin`` describe internal nodes (index into the joint feature list);
    ``leaf_values`` has 2**depth entries, already scaled by the learning rate. ``node_values``
    (2**depth - 1, or empty for a tree saved before they were kept): what each internal node would
    predict as a leaf, ``lr * -G/(H + lambda)`` over its rows; the reason codes'
    path attribution (:func:`mpc_fl.models.reasons.tree_contributions`) needs them.
    """

    depth: int
    feature: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bin: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    leaf_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    node_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: per internal node, the gain of its split (0 if none): feature importance's input, not saved
    gains: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def path_values(self) -> np.ndarray:
        """Every node's value in heap order (internal nodes, then leaves): what the path attribution walks."""
        if len(self.node_values) != len(self.feature):
            raise ValueError("this tree was saved before node values were kept: retrain it for reason codes")
        return np.concatenate([self.node_values, self.leaf_values])

    def leaf_index(self, bins: np.ndarray) -> np.ndarray:
        node = np.zeros(len(bins), dtype=np.int64)
        for _ in range(self.depth):
            f, b = self.feature[node], self.bin[node]
            go_right = (f != NO_SPLIT) & (bins[np.arange(len(bins)), np.maximum(f, 0)] > b)
            node = 2 * node + 1 + go_right
        return node - (2**self.depth - 1)

    def predict(self, bins: np.ndarray) -> np.ndarray:
        return self.leaf_values[self.leaf_index(bins)]


def importance(trees: list[Tree], n_features: int) -> dict[str, np.ndarray]:
    """Per feature, the total gain of the splits on it (XGBoost's ``total_gain``) and their count
    (``weight``): what :meth:`mpc_fl.protocols.base.VerticalProtocol.feature_importance` reports."""
    gain, splits = np.zeros(n_features), np.zeros(n_features)
    for t in trees:
        used = t.feature != NO_SPLIT
        np.add.at(gain, t.feature[used], t.gains[used])
        np.add.at(splits, t.feature[used], 1.0)
    return {"gain": gain, "splits": splits}


def stack_trees(trees: list[Tree]) -> dict[str, np.ndarray]:
    """A saved model's arrays: per field, one row per tree."""
    return {
        k: np.stack([getattr(t, k) for t in trees]) for k in ("feature", "bin", "leaf_values", "node_values")
    }


def unstack_trees(depth: int, arrays: dict[str, np.ndarray]) -> list[Tree]:
    """The trees of :func:`stack_trees`; a model saved before node values were kept gets none (no reasons)."""
    node_values = arrays.get("node_values", np.zeros((len(arrays["feature"]), 0)))
    fields = (arrays["feature"], arrays["bin"], arrays["leaf_values"], node_values)
    return [Tree(depth, *row) for row in zip(*fields, strict=True)]


def grow_tree(
    bins: np.ndarray, g: np.ndarray, h: np.ndarray, params: GBDTParams, monotone: np.ndarray | None = None
) -> Tree:
    """Grow one complete tree level by level from binned features and gradients (``monotone``: per
    feature +1/-1/0, :func:`split_gains` and :func:`constrain_tree`)."""
    depth, lam = params.max_depth, params.reg_lambda
    n_internal = 2**depth - 1
    tree = Tree(depth, np.full(n_internal, NO_SPLIT), np.full(n_internal, NO_SPLIT), np.zeros(2**depth))
    tree.node_values, tree.gains = np.zeros(n_internal), np.zeros(n_internal)
    node_of_row = np.zeros(len(g), dtype=np.int64)
    for node in range(n_internal):
        rows = np.flatnonzero(node_of_row == node)
        tree.node_values[node] = params.learning_rate * leaf_weight(g[rows].sum(), h[rows].sum(), lam)
        G, H = histograms(bins[rows], params.n_bins, g[rows], h[rows])
        gains = split_gains(G, H, lam, params.min_child_weight, monotone)
        f, b = best_split(gains)
        tree.feature[node], tree.bin[node] = f, b
        tree.gains[node] = 0.0 if f == NO_SPLIT else gains[f, b]
        go_right = (bins[rows, f] > b) if f != NO_SPLIT else np.zeros(len(rows), bool)
        node_of_row[rows] = 2 * node + 1 + go_right
    leaf = node_of_row - n_internal
    G_leaf = np.bincount(leaf, weights=g, minlength=2**depth)
    H_leaf = np.bincount(leaf, weights=h, minlength=2**depth)
    tree.leaf_values = params.learning_rate * leaf_weight(G_leaf, H_leaf, lam)
    if monotone is not None:
        constrain_tree(tree, monotone)
    return tree


class PlainGBDT:
    """Centralised histogram GBDT for binary labels (the secure protocols' oracle).

    ``monotone``: per feature of ``X``, +1, -1 or 0 (:mod:`mpc_fl.models.monotone`); None: none.
    """

    def __init__(self, params: GBDTParams = GBDTParams(), monotone: np.ndarray | None = None):  # noqa: B008
        self.params = params
        self.monotone = None if monotone is None or not np.any(monotone) else np.asarray(monotone)

    def fit(self, X: np.ndarray, y: np.ndarray) -> PlainGBDT:
        self.params.validate()
        self.edges_ = quantile_bin_edges(X, self.params.n_bins)
        return self.fit_binned(apply_bins(X, self.edges_), y)

    def fit_binned(self, bins: np.ndarray, y: np.ndarray) -> PlainGBDT:
        self.base_margin_ = base_margin(y)
        margin = np.full(len(y), self.base_margin_)
        self.trees_: list[Tree] = []
        for _ in range(self.params.n_trees):
            g, h = logistic_grad_hess(y, margin)
            tree = grow_tree(bins, g, h, self.params, self.monotone)
            margin += tree.predict(bins)
            self.trees_.append(tree)
        return self

    def decision_function_binned(self, bins: np.ndarray) -> np.ndarray:
        return self.base_margin_ + sum(t.predict(bins) for t in self.trees_)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.decision_function_binned(apply_bins(X, self.edges_))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision_function(X)))


def publicly_empty_nodes(owners: list[np.ndarray]) -> list[np.ndarray]:
    """Per tree, the nodes every party knows are empty: the right child of a no-split node and all below it.

    Why: a no-split node sends every row left, so its right subtree is empty whatever the data;
    these nodes leak nothing, but their (empty) row sets are known to all. Layout as in
    :func:`reconstructable_nodes`.
    """
    out = []
    for o in owners:
        n_internal = _n_internal(o)
        empty = np.zeros(2 * n_internal + 1, dtype=bool)
        for k in range(n_internal):
            if empty[k]:
                empty[2 * k + 1 : 2 * k + 3] = True
            elif o[k] == NO_SPLIT:
                empty[2 * k + 2] = True
        out.append(empty)
    return out


def reconstructable_nodes(owners: list[np.ndarray], party: int) -> list[np.ndarray]:
    """Per tree, the nodes whose exact training-row set ``party`` learns from the public split owners.

    Why: a protocol that reveals each split's owner to everyone and its (feature, bin) to the
    owner (SS-GBDT) lets the owner evaluate ``bins[:, f] <= b`` on every row; chaining its own
    splits down from the root, it learns exactly which rows reach every node whose path it
    controls. At scoring the same nodes give it the paths of the test rows.

    ``owners[t]`` lists tree ``t``'s internal nodes in heap order (node k has children 2k+1 and
    2k+2): the owner's rank or NO_SPLIT. Returns per tree a boolean mask over all
    ``2 * len(owners[t]) + 1`` nodes in heap order (the internal nodes, then the leaves). Node v is
    True iff

    * v is the root (every row: known to all), or
    * its parent is True and the parent's split is owned by ``party`` or is NO_SPLIT (a no-split
      node sends every row left: its left child has its rows, its right child none), or
    * v is publicly empty (:func:`publicly_empty_nodes`): True for every party.

    Equivalently: every split on v's path is ``party``'s or NO_SPLIT, or the path goes right at a
    no-split node. This is exactly the set of nodes whose rows ``party`` can tell from the owners,
    its own splits and its own data when ``min_child_weight > 0`` (each valid split then leaves
    both children non-empty, so no other node is ever known to be empty); for the others the
    other parties' splits matter. The mask includes the nodes every party knows
    (:func:`reconstructable_by_all`); :func:`reconstructable_summary` counts the others.
    """
    if party < 0:
        raise ValueError(f"party must be a rank >= 0, got {party}")
    out = []
    for o, empty in zip(owners, publicly_empty_nodes(owners), strict=True):
        n_internal = _n_internal(o)
        known = empty.copy()
        known[0] = True
        for k in range(n_internal):
            if known[k] and (o[k] == party or o[k] == NO_SPLIT):
                known[2 * k + 1 : 2 * k + 3] = True
        out.append(known)
    return out


def reconstructable_by_all(owners: list[np.ndarray]) -> list[np.ndarray]:
    """Per tree, the nodes whose row set *every* party knows from the public owners alone.

    These are the root (every row), the nodes reached from the root through left branches of
    no-split nodes only (every row as well: a no-split node sends all its rows left), and the
    publicly empty nodes (:func:`publicly_empty_nodes`: the right child of a no-split node and
    all below it). No party learns anything from them, so they are no leakage; they are what
    :func:`reconstructable_nodes` gives a party that owns no split. Layout as there.
    """
    out = []
    for o, empty in zip(owners, publicly_empty_nodes(owners), strict=True):
        known = empty.copy()
        known[0] = True
        for k in range(_n_internal(o)):
            if known[k] and o[k] == NO_SPLIT:
                known[2 * k + 1 : 2 * k + 3] = True
        out.append(known)
    return out


def reconstructable_summary(owners: list[np.ndarray], party: int) -> dict[str, int]:
    """Per party, how many nodes' training rows it can reconstruct that not every party knows.

    The leakage counts (the root is never counted: everyone knows it holds every row):

    * ``nodes``: non-root nodes, internal *and* leaves, that :func:`reconstructable_nodes` gives
      ``party`` and that are not known to all (:func:`reconstructable_by_all`: not publicly empty,
      i.e. not the right child of a no-split node or below one, and not reached through no-split
      nodes only). With ``min_child_weight > 0`` each of them holds at least one training row.
      The left child of a no-split node on an owned path counts (its rows are its parent's);
    * ``nodes_internal`` + ``nodes_leaves`` = ``nodes``: of them, internal nodes and leaves;
    * ``nodes_total``: all non-root nodes (internal and leaves) of all trees;
    * ``public``: the non-root nodes known to all, left out of ``nodes`` (the same for every party).

    Kept for earlier records and their readers, with their earlier meaning: ``internal`` /
    ``leaves`` count the masks' non-root internal nodes / leaves *including* the nodes known to
    all (so the same publicly empty nodes for every party), out of ``internal_total`` /
    ``leaves_total``; ``empty``: the publicly empty non-root nodes.
    """
    counts = dict.fromkeys(
        ("nodes", "nodes_internal", "nodes_leaves", "nodes_total", "public")
        + ("internal", "internal_total", "leaves", "leaves_total", "empty"),
        0,
    )
    trees = zip(
        owners,
        reconstructable_nodes(owners, party),
        reconstructable_by_all(owners),
        publicly_empty_nodes(owners),
        strict=True,
    )
    for o, known, by_all, empty in trees:
        n_internal = len(o)
        leaked = known & ~by_all
        counts["nodes_internal"] += int(leaked[1:n_internal].sum())
        counts["nodes_leaves"] += int(leaked[n_internal:].sum())
        counts["nodes_total"] += 2 * n_internal
        counts["public"] += int(by_all[1:].sum())
        counts["internal"] += int(known[1:n_internal].sum())
        counts["internal_total"] += n_internal - 1
        counts["leaves"] += int(known[n_internal:].sum())
        counts["leaves_total"] += n_internal + 1
        counts["empty"] += int(empty[1:].sum())
    counts["nodes"] = counts["nodes_internal"] + counts["nodes_leaves"]
    return counts


def _n_internal(owners_t: np.ndarray) -> int:
    n = len(owners_t)
    if n < 1 or (n + 1) & n:
        raise ValueError(f"a complete tree has 2**depth - 1 internal nodes, got {n}")
    return n
