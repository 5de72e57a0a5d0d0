"""SecureBoost reproduces PlainGBDT (same trees, same scores) with two parties as threads over LocalChannel."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.crypto.paillier import SCHEMES, allow_short_keys_for_tests
from mpc_fl.models.gbdt import GBDTParams, PlainGBDT
from mpc_fl.protocols.base import LocalData
from mpc_fl.protocols.secureboost import SecureBoost
from mpc_fl.runtime.channel import LocalChannel
from mpc_fl.runtime.local import ThreadContext, run_in_threads

KEY_BITS = 1024  # below the 2048-bit floor: tests that make keys use the short_keys fixture (conftest)


def run_threads(roles: tuple[str, ...], fn) -> dict:  # noqa: ANN001
    return run_in_threads(fn, roles)


def _synthetic(n: int = 400, seed: int = 0):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[:, 2] = rng.integers(0, 3, size=n)  # categorical: few distinct values, empty bins
    X[:, 5] = rng.integers(0, 2, size=n)  # binary provider column
    z = 1.5 * X[:, 0] - X[:, 3] + 0.8 * (X[:, 2] == 1) + 0.9 * X[:, 5] * X[:, 4]
    y = (z + rng.logistic(size=n) > 0).astype(float)
    k = n * 3 // 4
    return X[:k], y[:k], X[k:]


@pytest.mark.usefixtures("short_keys")
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize(
    "params",
    [
        GBDTParams(n_trees=3, max_depth=3, n_bins=16, learning_rate=0.3),
        GBDTParams(n_trees=2, max_depth=4, n_bins=8, learning_rate=0.5, min_child_weight=5.0),
    ],
)
def test_matches_plaintext(params: GBDTParams, scheme: str) -> None:
    X, y, X_te = _synthetic()
    d_b = 3

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, d_b) if ctx.role == "bank" else slice(d_b, None)
        proto = SecureBoost(params, scheme=scheme, key_bits=KEY_BITS)
        proto.fit(ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None))
        return proto.predict_proba(ctx, LocalData(X_te[:, cols])), proto

    res = run_threads(("bank", "provider"), fn)
    (p_bank, sb), led_b = res["bank"]
    (p_prov, sp), led_p = res["provider"]
    plain = PlainGBDT(params).fit(X, y)
    assert p_prov is None
    for t_sec, t_plain in zip(sb.trees_, plain.trees_, strict=True):
        assert t_sec.feature.tolist() == t_plain.feature.tolist()
        assert t_sec.bin.tolist() == t_plain.bin.tolist()
        np.testing.assert_allclose(t_sec.leaf_values, t_plain.leaf_values, rtol=1e-12, atol=1e-12)
    # both parties own splits, and the provider knows exactly its own nodes
    owned = [{k for k, f in enumerate(t.feature) if f >= d_b} for t in sb.trees_]
    assert [set(s) for s in sp.splits_] == owned
    assert any(owned) and any(f < d_b for t in sb.trees_ for f in t.feature if f >= 0)
    for t, s in zip(sb.trees_, sp.splits_, strict=True):
        for node, (f, b) in s.items():
            assert (f + d_b, b) == (t.feature[node], t.bin[node])
    np.testing.assert_allclose(p_bank, plain.predict_proba(X_te), rtol=0, atol=1e-9)
    assert len(sb.history_) == params.n_trees == len(sp.history_)
    # encrypted (g, h) of every row, once per tree, and compressed histograms really go over the channel
    ct_bytes = (2 if scheme == "paillier" else 1) * KEY_BITS // 8  # |n^2| Paillier, |n| OU
    assert led_b.by_phase["training"].bytes_sent >= params.n_trees * len(y) * ct_bytes
    assert led_p.by_phase["training"].bytes_sent >= params.n_trees * (2**params.max_depth - 1) * ct_bytes
    assert led_b.by_phase["setup"].bytes_sent > KEY_BITS // 8
    assert led_p.by_phase["scoring"].bytes_sent > 0


@pytest.mark.usefixtures("short_keys")
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_histogram_compression_and_subtraction_are_used(scheme: str) -> None:
    """The provider sends few ciphertexts per node: fewer than one per (feature, bin)."""
    X, y, X_te = _synthetic(n=200, seed=1)
    params = GBDTParams(n_trees=1, max_depth=2, n_bins=32)

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, 2) if ctx.role == "bank" else slice(2, None)
        proto = SecureBoost(params, scheme=scheme, key_bits=KEY_BITS)
        proto.fit(ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None))
        return proto

    res = run_threads(("bank", "provider"), fn)
    led_p = res["provider"][1]
    uncompressed = 3 * 4 * 32 * ((2 if scheme == "paillier" else 1) * KEY_BITS // 8)  # 3 nodes x 4 x 32 bins
    # ~15 packed bins per 1024-bit ZPaillier plaintext, ~5 per OU one (its plaintexts are mod p, |n| / 3 bits)
    assert led_p.by_phase["training"].bytes_sent < uncompressed / (4 if scheme == "paillier" else 2)


@pytest.mark.usefixtures("short_keys")
def test_every_returned_ciphertext_is_rerandomized(ciphertext_spy) -> None:  # noqa: ANN001
    """Squeezed histograms never go out as the deterministic product of the bank's per-row ciphertexts."""
    X, y, _ = _synthetic(n=160, seed=2)
    params = GBDTParams(n_trees=2, max_depth=2, n_bins=8)

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, 3) if ctx.role == "bank" else slice(3, None)
        SecureBoost(params, key_bits=KEY_BITS).fit(
            ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None)
        )

    run_threads(("bank", "provider"), fn)
    # one squeezed histogram per node: 2 trees x 3 internal nodes
    ciphertext_spy.assert_all_rerandomized("provider", expected=2 * 3)


@pytest.mark.parametrize("scheme,label", [("paillier", "Paillier"), ("ou", "OU")])
def test_short_key_is_refused_outside_tests(scheme: str, label: str) -> None:
    with pytest.raises(ValueError, match=rf"{label} keys below 2048 bits are refused \(got 1024"):
        SecureBoost(GBDTParams(n_trees=1), scheme=scheme, key_bits=1024)


@pytest.mark.usefixtures("short_keys")
def test_the_bank_refuses_a_histogram_outside_the_packed_range(monkeypatch) -> None:  # noqa: ANN001
    """A provider that sends an overflowed ciphertext for a histogram (the OU key-recovery attack's first step)
    stops the run at the bank before any split derived from it goes out."""
    from mpc_fl.crypto import paillier

    X, y, _ = _synthetic(n=160, seed=2)
    real_squeeze = paillier.HeuBackend.squeeze

    def crafted(self, ct, bits, k):  # noqa: ANN001, ANN202
        sq = real_squeeze(self, ct, bits, k)
        return self.mul_plain(sq, np.full(self.shape(sq), 1 << (self.plaintext_bits // 2), dtype=object))

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, 3) if ctx.role == "bank" else slice(3, None)
        SecureBoost(GBDTParams(n_trees=1, max_depth=2, n_bins=8), scheme="ou", key_bits=KEY_BITS).fit(
            ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None)
        )

    monkeypatch.setattr(paillier.HeuBackend, "squeeze", crafted)
    with pytest.raises(ValueError, match="squeezed plaintext outside"):
        run_threads(("bank", "provider"), fn)


@pytest.mark.usefixtures("short_keys")
def test_rejects_more_than_two_parties() -> None:
    X, y, _ = _synthetic(n=80)
    roles = ("bank", "p1", "p2")
    ctx = ThreadContext("bank", roles, LocalChannel.create(roles)["bank"])
    with pytest.raises(ValueError, match="two-party"):
        SecureBoost(GBDTParams(n_trees=1), key_bits=KEY_BITS).fit(ctx, LocalData(X[:, :2], y))


def test_params_dict_has_scheme_and_key_bits() -> None:
    with allow_short_keys_for_tests():
        d = SecureBoost(GBDTParams(n_trees=3), key_bits=1024).params_dict()
    assert d["key_bits"] == 1024 and d["n_trees"] == 3 and d["scheme"] == "ou"
    assert SecureBoost(scheme="paillier").params_dict()["key_bits"] == 2048
    assert SecureBoost.name == "secureboost"


@pytest.mark.usefixtures("short_keys")
def test_monotone_constraints_give_the_plaintext_twins_trees() -> None:
    """Each party constrains its own features; the bank grows PlainGBDT's constrained trees (it is
    told the provider's constraints: stated in ``leakage``) and the scores never move the wrong way."""
    X, y, X_te = _synthetic()
    names = tuple(f"x{j}" for j in range(6))
    spec = {"bank": "x0:+1,x2:+1", "provider": "x3:+1,x4:-1"}
    joint = np.array([1, 0, 1, 1, -1, 0])
    params = GBDTParams(n_trees=3, max_depth=3, n_bins=16)
    grid = np.unique(np.quantile(X[:, 3], np.linspace(0, 1, 12)))
    rows = np.repeat(X_te[:16], len(grid), axis=0)
    rows[:, 3] = np.tile(grid, 16)

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, 3) if ctx.role == "bank" else slice(3, None)
        proto = SecureBoost(params, key_bits=KEY_BITS, monotone=spec[ctx.role])
        proto.fit(ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None, names[cols]))
        return proto.decision_function(ctx, LocalData(rows[:, cols], None, names[cols])), proto

    res = run_threads(("bank", "provider"), fn)
    (margins, sb), _ = res["bank"]
    twin = PlainGBDT(params, joint).fit(X, y)
    for t_sec, t_plain in zip(sb.trees_, twin.trees_, strict=True):
        assert (
            t_sec.feature.tolist() == t_plain.feature.tolist() and t_sec.bin.tolist() == t_plain.bin.tolist()
        )
        np.testing.assert_allclose(t_sec.leaf_values, t_plain.leaf_values, rtol=1e-9, atol=1e-9)
    assert (np.diff(margins.reshape(16, -1), axis=1) >= 0).all()  # x3 constrained +1
    assert sb.run_info() == {"monotone": {"x0": 1, "x2": 1}}


@pytest.mark.usefixtures("short_keys")
def test_feature_importance_is_the_twins_and_the_provider_gets_its_own() -> None:
    from mpc_fl.models.gbdt import importance

    X, y, _ = _synthetic()
    params = GBDTParams(n_trees=3, max_depth=3, n_bins=16)

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, 3) if ctx.role == "bank" else slice(3, None)
        proto = SecureBoost(params, key_bits=KEY_BITS)
        proto.fit(ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None))
        return proto.feature_importance(ctx)

    res = run_threads(("bank", "provider"), fn)
    twin = importance(PlainGBDT(params).fit(X, y).trees_, 6)
    for role, cols in (("bank", slice(0, 3)), ("provider", slice(3, 6))):
        got, _ = res[role]
        for kind in ("gain", "splits"):
            np.testing.assert_allclose(got[kind], twin[kind][cols], rtol=1e-9, atol=1e-9)


def _reasons_view(
    monkeypatch, membership: np.ndarray, leaky: bool = False
) -> tuple[dict, SecureBoost, SecureBoost]:  # noqa: ANN001
    """Everything the bank receives while SecureBoost explains 30 rows (``leaky``: a provider that
    also sends its split thresholds' bin edges, the positive control)."""
    X, y, X_te = _synthetic()
    received: list[dict] = []
    honest_recv = LocalChannel.recv_arrays

    def spy(self, frm, **kw):  # noqa: ANN001, ANN202
        got = honest_recv(self, frm, **kw)
        if self.role == "bank" and getattr(self, "_explaining", False):
            received.append(got)
        return got

    monkeypatch.setattr(LocalChannel, "recv_arrays", spy)
    if leaky:
        honest_send = LocalChannel.send_arrays

        def send(self, to, **arrays):  # noqa: ANN001, ANN003, ANN202
            if "unit" in arrays:
                arrays["edges"] = np.concatenate([np.asarray(e, dtype=np.float64) for e in self._edges])
            return honest_send(self, to, **arrays)

        monkeypatch.setattr(LocalChannel, "send_arrays", send)

    def fn(ctx):  # noqa: ANN001, ANN202
        cols = slice(0, 3) if ctx.role == "bank" else slice(3, None)
        proto = SecureBoost(GBDTParams(n_trees=2, max_depth=2, n_bins=8), key_bits=KEY_BITS)
        proto.fit(ctx, LocalData(X[:, cols], y if ctx.role == "bank" else None))
        ctx.channel._explaining, ctx.channel._edges = True, proto.edges_
        mine = np.eye(3) if ctx.role == "bank" else membership
        proto.reason_contributions(ctx, LocalData(X_te[:30, cols]), mine, np.zeros(3))
        return proto

    res = run_threads(("bank", "provider"), fn)
    return received, res["bank"][0], res["provider"][0]


def _beyond_the_units(received: list[dict], provider: SecureBoost, membership: np.ndarray) -> list[str]:
    """What the bank received in the reasons phase beyond the decision bits and each provider split's unit."""
    problems = []
    for got in received:
        extra = set(got) - {"unit", "n_units", "bits", "shape"}
        problems += [f"unexpected {k!r}" for k in sorted(extra)]
        if "unit" in got:
            owned = [f for sp in provider.splits_ for _, (f, _) in sorted(sp.items())]
            if got["unit"].tolist() != np.argmax(membership[owned], axis=1).tolist():
                problems.append("units that are not the release's")
    return problems


@pytest.mark.usefixtures("short_keys")
@pytest.mark.parametrize("release", ["none", "group"])
def test_the_bank_gets_each_provider_splits_unit_and_nothing_more_for_reasons(
    monkeypatch, release: str
) -> None:
    """Played as the bank, with every array the provider sends while reasons are computed: the decision
    bits it already gets for scoring and, per provider split, the unit of its feature at the release
    level (under ``none`` always the one unit, so nothing). Positive control: a provider that also
    sends its bin edges is flagged by the same check."""
    membership = np.ones((3, 1)) if release == "none" else np.array([[1, 0], [1, 0], [0, 1]])
    received, _, provider = _reasons_view(monkeypatch, membership)
    assert any(provider.splits_) and _beyond_the_units(received, provider, membership) == []
    if release == "none":
        assert all(not got["unit"].any() for got in received if "unit" in got)
    leaked, _, provider = _reasons_view(monkeypatch, membership, leaky=True)
    assert "unexpected 'edges'" in _beyond_the_units(leaked, provider, membership)
