"""The share arithmetic of :mod:`mpc_fl.crypto.share_math`, without a protocol: each result against numpy.

Every function runs once per party set in real party processes with the dealer (one
``run_local`` per set, shared by the tests of this module); the parties return what they opened
(``reveal`` gives the ring integers, so "exact" means equal integers, not close floats).
"""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.runtime.local import run_local
from tests.budget import budget_s

TWO = ("bank", "provider")
THREE = ("bank", "provider", "provider2")
SCALE = 1 << 16  # CrypTen's default encoding

GEN = np.random.default_rng(11)
VALS = np.round(GEN.normal(size=(4, 5)) * 50, 3)  # fixed-point values
INTS = GEN.integers(-1000, 1000, size=(4, 5)).astype(np.float64)  # counts (precision 0)
BITS = (GEN.random((4, 5)) < 0.5).astype(np.float64)
#: reciprocal inputs spanning the whole range [16^-K, 1] (K = 3 below), ends included
K_RR = 3
X_RR = np.concatenate(
    [[16.0**-K_RR, 1 / 16, 1 / 256, 1.0, 0.999], np.exp(GEN.uniform(np.log(16.0**-K_RR), 0, 40))]
)
TIMES_RR = np.round(GEN.normal(size=X_RR.shape) * 2, 3)
#: argmax inputs: ties (the first wins), the maximum last, a single candidate, padding beyond 4^k
ARGMAX = [
    [[0.0, 1.0, 1.0, 0.5], [2.0, -1.0, 2.0, 2.0], [-1.0, -1.0, -1.0, -1.0], [0.0, 0.1, 0.2, 3.25]],
    np.clip(np.round(GEN.normal(size=(3, 70)), 3), -3.5, 3.5).tolist(),  # above the padding (-4)
    [[1.5], [-2.0]],
]
ARGMAX[1][2][17] = ARGMAX[1][2][40] = 9.0  # a tie across groups of four
ARGMAX[1][0][69] = 9.0  # the maximum in the padded group


def _party(session) -> dict:  # noqa: ANN001
    import torch

    from mpc_fl.crypto import share_math as sm
    from mpc_fl.crypto.secure_crypten import crypten

    def enc(a, **kw):  # noqa: ANN001, ANN202
        return crypten.cryptensor(torch.tensor(np.asarray(a), dtype=torch.float64), **kw)

    out: dict = {}
    v, i, b = enc(VALS), enc(INTS, precision=0), enc(BITS, precision=0)
    out["precision"] = (sm.precision(v), sm.precision(i))
    out["raw"] = (sm.raw(v).reveal().tolist(), sm.precision(sm.raw(v)), v.reveal().tolist())
    out["cumsum"] = sm.on_shares(v, lambda s: s.cumsum(1)).reveal().tolist()
    out["int_mul"] = (sm.int_mul(v, -7).reveal().tolist(), sm.int_mul(i, 3).reveal().tolist())
    up = sm.upscale(i, 12)
    out["upscale"] = (up.reveal().tolist(), sm.precision(up), up.get_plain_text().tolist())
    try:
        sm.upscale(v, 4)
        out["upscale_fixed"] = "accepted"
    except AssertionError:
        out["upscale_fixed"] = "refused"

    # products: bit x value and int x int exact, value x value truncated, broadcast, one round
    led = session.channel.ledger
    row = enc(VALS[0])
    with session.channel.phase("products"):
        bv, ii, vv, bc = sm.products([(b, v), (i, i), (v, v), (b, row)])
    out["products"] = {
        "bv": (bv.reveal().tolist(), sm.precision(bv)),
        "ii": (ii.reveal().tolist(), sm.precision(ii)),
        "vv": (vv.get_plain_text().double().tolist(), sm.precision(vv)),
        "bc": bc.reveal().tolist(),
        "v_raw": v.reveal().tolist(),
        "row_raw": row.reveal().tolist(),
        "rounds": led.by_phase["products"].rounds,
    }

    # times_factor: factor = 1 + sum_j 15*16^j c_j from bits c (k, ...) and cv = c * v
    c = enc(BITS[:3], precision=0)  # (3, 5): three bits per column
    w = enc(VALS[0])
    (cw,) = sm.products([(c, w)])
    out["times_factor"] = (sm.times_factor(w, cw).reveal().tolist(), w.reveal().tolist())

    # RangeReduced: times / x as factor * scaled, on the whole range; and squared, with rides
    x, t = enc(X_RR), enc(TIMES_RR)
    out["x_rr"] = x.get_plain_text().double().tolist()  # x as encoded: 16 bits are coarse near 16^-3
    out["t_rr"] = t.get_plain_text().double().tolist()
    out["thresholds"] = sm.RangeReduced.thresholds(x, K_RR).get_plain_text().double().tolist()
    rr = sm.RangeReduced(x, K_RR, t)
    out["recip"] = rr.times_factor(rr.scaled).get_plain_text().double().tolist()
    out["factor_bits"] = rr.c.get_plain_text().round().long().tolist()
    out["factor_of_ones"] = rr.times_factor(enc(np.ones_like(X_RR), precision=0)).reveal().tolist()
    rides = [lambda got: [(t, t)], lambda got: [(got[0], t)]]
    sq = sm.RangeReduced(x, K_RR, t, square=True, ride=rides)
    out["recip_sq"] = sq.times_factor(sq.scaled).get_plain_text().double().tolist()
    out["ridden"] = [r.get_plain_text().double().tolist() for r in sq.ridden]
    ge = sm.RangeReduced.thresholds(x, K_RR) >= 0
    given = sm.RangeReduced(x, K_RR, t, ge=ge)
    out["recip_given_ge"] = given.times_factor(given.scaled).get_plain_text().double().tolist()
    none = sm.RangeReduced(enc([0.3, 0.9]), 0, enc([1.0, 2.0]))
    out["recip_k0"] = none.times_factor(none.scaled).get_plain_text().double().tolist()

    onehots = []
    for scores in ARGMAX:
        oh = sm.argmax_first(enc(scores))
        onehots.append((oh.reveal().tolist(), sm.precision(oh)))
    out["argmax"] = onehots
    return out


@pytest.fixture(scope="module", params=[TWO, THREE], ids=["2 parties", "3 parties"])
def opened(request) -> dict:  # noqa: ANN001
    res = run_local(_party, request.param, timeout_s=budget_s(15, processes=len(request.param) + 1))
    return {role: r["result"] for role, r in res.items()}


def test_precision_and_raw_read_the_encoding(opened):
    for role, out in opened.items():
        assert out["precision"] == (16, 0), role
        raw, raw_precision, v_raw = out["raw"]
        assert raw == v_raw and raw_precision == 0, role  # the same integers, now read as integers
        np.testing.assert_allclose(np.array(v_raw) / SCALE, VALS, atol=2 / SCALE)  # x * 2^16, encoded


def test_on_shares_applies_a_linear_integer_map_exactly(opened):
    for role, out in opened.items():
        v_raw = np.array(out["raw"][2])
        np.testing.assert_array_equal(np.array(out["cumsum"]), v_raw.cumsum(1), err_msg=role)


def test_int_mul_and_upscale_are_exact(opened):
    for role, out in opened.items():
        fixed, ints = out["int_mul"]
        np.testing.assert_array_equal(np.array(fixed), np.array(out["raw"][2]) * -7, err_msg=role)
        np.testing.assert_array_equal(np.array(ints), INTS.astype(np.int64) * 3, err_msg=role)
        up, up_precision, decoded = out["upscale"]
        assert up_precision == 12
        np.testing.assert_array_equal(np.array(up), INTS.astype(np.int64) << 12, err_msg=role)
        np.testing.assert_array_equal(np.array(decoded), INTS, err_msg=role)
        assert out["upscale_fixed"] == "refused"  # only integers are re-encoded


def test_products_equal_plaintext_products_in_one_round(opened):
    for role, out in opened.items():
        p = out["products"]
        v_raw = np.array(p["v_raw"])
        # a bit or a count times anything: the ring integers multiplied, no truncation
        assert p["bv"][1] == 16 and p["ii"][1] == 0
        np.testing.assert_array_equal(np.array(p["bv"][0]), BITS.astype(np.int64) * v_raw, err_msg=role)
        np.testing.assert_array_equal(np.array(p["ii"][0]), (INTS * INTS).astype(np.int64), err_msg=role)
        np.testing.assert_array_equal(
            np.array(p["bc"]), BITS.astype(np.int64) * np.array(p["row_raw"])[None, :], err_msg=role
        )  # broadcast
        # two fixed-point values: truncated back to 16 bits, like CrypTen's product
        assert p["vv"][1] == 16
        np.testing.assert_allclose(np.array(p["vv"][0]), (v_raw / SCALE) ** 2, atol=1e-3, err_msg=role)
        if len(opened) == 2:  # (with three parties CrypTen's truncation of vv takes rounds of its own)
            assert p["rounds"] == 1 + (3 if role == "bank" else 0), p["rounds"]  # + the bank's dealer request


def test_times_factor_multiplies_by_one_plus_the_weighted_bits(opened):
    factor = 1 + sum(15 * 16**j * BITS[j].astype(np.int64) for j in range(3))
    for role, out in opened.items():
        got, w_raw = out["times_factor"]
        np.testing.assert_array_equal(np.array(got), np.array(w_raw) * factor, err_msg=role)


def _within_fixed_point_error(got: list, want: np.ndarray, factor: np.ndarray, size: np.ndarray) -> bool:
    """Fixed-point rounding of ``scaled`` (in [1, 16] times ``size``) grows by ``factor`` when it is lifted
    back: allow 5e-3 of that (~300 ulps of 2^-16; measured below 1e-3), plus 0.1% of the value."""
    err = np.abs(np.array(got) - want)
    return bool(np.all(err <= 1e-3 * np.abs(want) + 5e-3 * factor * size))


def test_range_reduced_reciprocal_is_accurate_on_its_whole_range(opened):
    for role, out in opened.items():
        x, t = np.array(out["x_rr"]), np.array(out["t_rr"])
        below = (x[None, :] < 16.0 ** -np.arange(1, K_RR + 1)[:, None]).astype(int)
        np.testing.assert_allclose(
            np.array(out["thresholds"]), x[None, :] - 16.0 ** -np.arange(1, K_RR + 1)[:, None], atol=1e-4
        )
        assert np.array_equal(np.array(out["factor_bits"]), below), role
        # the factor is the power of 16 that lifts x into [1/16, 1], applied exactly
        factor = 16 ** below.sum(0)
        assert np.array_equal(np.array(out["factor_of_ones"]), factor), role
        for key in ("recip", "recip_given_ge"):
            assert _within_fixed_point_error(out[key], t / x, factor, 1 + np.abs(t)), (role, key)
        assert _within_fixed_point_error(out["recip_sq"], t**2 / x, factor, 1 + t**2), role
        np.testing.assert_allclose(np.array(out["recip_k0"]), [1 / 0.3, 2 / 0.9], rtol=1e-3)
        # the caller's products rode along, in order
        np.testing.assert_allclose(np.array(out["ridden"][0]), t**2, atol=1e-3)
        np.testing.assert_allclose(np.array(out["ridden"][1]), t**3, atol=2e-3)


def test_argmax_first_is_the_one_hot_of_the_first_maximum(opened):
    for role, out in opened.items():
        for scores, (onehot, precision) in zip(ARGMAX, out["argmax"], strict=True):
            x = np.array(scores)
            expected = np.eye(x.shape[1], dtype=np.int64)[np.argmax(x, axis=1)]  # numpy: the first maximum
            assert precision == 0 and np.array_equal(np.array(onehot), expected), (role, scores)
