"""Exact round trips of the HEU backend (OU and ZPaillier) and the SecureBoost packing/compression built on it."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.crypto import paillier
from mpc_fl.crypto.paillier import (
    MIN_KEY_BITS,
    SCHEMES,
    GHPacker,
    HeuBackend,
    SecretKeyRequiredError,
    allow_short_keys_for_tests,
    check_range,
    decode_fixed,
    encode_fixed,
    unsqueeze,
    values_per_ciphertext,
)

N, F, BINS = 200, 5, 8


@pytest.fixture(scope="module", params=list(SCHEMES))
def owner(request: pytest.FixtureRequest) -> HeuBackend:
    with allow_short_keys_for_tests():  # 1024 bits for speed; real runs refuse them
        return HeuBackend.generate(1024, request.param)


@pytest.fixture(scope="module")
def peer(owner: HeuBackend) -> HeuBackend:
    with allow_short_keys_for_tests():
        return HeuBackend.from_public_key(owner.public_key_bytes(), owner.scheme)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _hist(values: np.ndarray, order: np.ndarray, n_bins: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Plaintext oracle: out[j*n_bins + b, :] = sum of values[i] with order[i, j] == b (object ints)."""
    v = values.reshape(len(values), -1).astype(object)
    keep = np.ones(len(v), bool) if rows is None else rows
    out = np.zeros((n_bins * order.shape[1], v.shape[1]), dtype=object)
    for j in range(order.shape[1]):
        np.add.at(out, j * n_bins + order[keep, j].astype(np.int64), v[keep])
    return out


# --- fixed point ----------------------------------------------------------------------------------------------


def test_encode_fixed_rounds_and_decodes():
    x = np.array([0.3, -0.3, 1.0000007, 9e-7, -2.5])
    v = encode_fixed(x, 20)
    assert v.dtype == np.int64
    assert np.array_equal(v, np.round(x * 2**20).astype(np.int64))  # rounded, not truncated
    assert np.max(np.abs(decode_fixed(v, 20) - x)) <= 2**-21
    assert decode_fixed(np.array([3 << 70], dtype=object), 70)[0] == 3.0
    with pytest.raises(ValueError):
        encode_fixed(np.array([1e30]), 40)


# --- keys, encryption, wire format ----------------------------------------------------------------------------


def test_encrypt_decrypt_round_trip_with_negatives(owner: HeuBackend, rng: np.random.Generator):
    v1 = rng.integers(-(2**62), 2**62, size=N, dtype=np.int64)
    v2 = rng.integers(-(2**40), 2**40, size=(N, 3), dtype=np.int64)
    assert np.array_equal(owner.decrypt(owner.encrypt(v1)), v1)
    out = owner.decrypt(owner.encrypt(v2))
    assert out.dtype == np.int64 and out.shape == (N, 3)
    assert np.array_equal(out, v2)
    wide = owner.plaintext_bits - 1
    big = np.array([1 << wide, -(1 << wide) + 17, 0, -1], dtype=object)
    assert list(owner.decrypt_big(owner.encrypt(big))) == list(big)
    with pytest.raises(ValueError):
        owner.decrypt(owner.encrypt(big))  # does not fit int64: refuse instead of HEU's silent 0


def test_short_keys_are_refused_by_default(owner: HeuBackend):
    """Neither generating nor loading a peer's 1024-bit key works outside the test-only override."""
    assert MIN_KEY_BITS == paillier.MIN_KEY_BITS == 2048
    label = "Paillier" if owner.scheme == "paillier" else "OU"
    with pytest.raises(
        ValueError, match=rf"^{label} keys below 2048 bits are refused \(got 1024, key_bits\)"
    ):
        HeuBackend.generate(1024, owner.scheme)
    with pytest.raises(
        ValueError, match=r"below 2048 bits are refused \(got 10\d\d, public key received from the peer"
    ):
        HeuBackend.from_public_key(
            owner.public_key_bytes(), owner.scheme
        )  # what a bank with a short key sends
    with allow_short_keys_for_tests():
        assert paillier.MIN_KEY_BITS == 1024
        with pytest.raises(ValueError, match="got 512"):
            HeuBackend.generate(512, owner.scheme)  # the test override still has a floor
    assert paillier.MIN_KEY_BITS == 2048  # restored


def test_a_key_of_another_scheme_is_refused(owner: HeuBackend):
    """The receiver loads only the scheme the run agreed on: neither an OU key for ZPaillier nor the reverse."""
    other = next(s for s in SCHEMES if s != owner.scheme)
    with (
        allow_short_keys_for_tests(),
        pytest.raises(ValueError, match=r"^peer sent a .* public key; this run agreed on"),
    ):
        HeuBackend.from_public_key(owner.public_key_bytes(), other)
    with pytest.raises(ValueError, match="cannot be read"):
        HeuBackend.from_public_key(b"not a key", owner.scheme)


def test_mock_public_key_is_refused():
    """HEU loads a Mock key (no encryption at all) from the same wire format: the receiver must refuse it."""
    from heu import numpy as hnp
    from heu import phe

    mock = hnp.setup(phe.SchemaType.Mock, 2048)
    for scheme in SCHEMES:
        with pytest.raises(ValueError, match=r"peer sent a Mock public key"):
            HeuBackend.from_public_key(bytes(mock.public_key().serialize()), scheme)


def test_plaintext_space_per_scheme(owner: HeuBackend):
    """ZPaillier's plaintexts are mod n (key_bits - 2 usable bits); OU's mod the secret p (about key_bits / 3)."""
    assert 1024 <= owner.key_bits <= 1040  # HEU's OU modulus may come out a few bits longer than asked
    if owner.scheme == "paillier":
        assert owner.plaintext_bits == 1022
    else:
        assert 330 <= owner.plaintext_bits <= 342
    top = np.array([(1 << owner.plaintext_bits) - 1], dtype=object)
    assert owner.decrypt_big(owner.encrypt(top))[0] == top[0]


def _modulus(backend: HeuBackend) -> int:
    return int(paillier._MODULUS.search(str(backend._kit.public_key())).group(1), 16)


def test_ou_overflow_attack_recovers_the_key_unless_the_range_is_checked():
    """HEU's "OU plaintext overflow attack", played by the evaluator: it multiplies a ciphertext so that its plaintext
    passes p; a key holder that returns the decryption hands it p (gcd with n). Positive control: the attack
    works on the raw decryption. The guard: check_range and unsqueeze refuse that decryption."""
    import math

    with allow_short_keys_for_tests():
        owner = HeuBackend.generate(1024, "ou")
        evaluator = HeuBackend.from_public_key(owner.public_key_bytes(), "ou")
    n = _modulus(evaluator)
    m = (1 << evaluator.plaintext_bits) - 12345  # the widest plaintext the scheme accepts
    crafted = evaluator.mul_plain(evaluator.encrypt(np.array([m], dtype=object)), np.array([7], dtype=object))
    leaked = int(owner.decrypt_big(crafted)[0])  # what a careless key holder would send back
    assert leaked != 7 * m
    p = math.gcd(7 * m - leaked, n)
    assert 1 < p < n and n % (p * p) == 0  # the positive control: p recovered, the key is broken
    with pytest.raises(ValueError, match="outside the range the protocol allows"):
        check_range(owner.decrypt_big(crafted), 200, "the peer's value")
    with pytest.raises(ValueError, match="outside"):
        unsqueeze(owner.decrypt_big(crafted), 100, 3, 3)
    check_range(np.array([(1 << 200) - 1, -(1 << 200) + 1], dtype=object), 200, "in range")  # no false alarm


def test_rerandomize_unlinks_identical_computations(owner: HeuBackend, peer: HeuBackend):
    """The review's finding: the same homomorphic computation twice gives byte-identical ciphertexts; re-randomised,
    the bytes differ (from each other and from the deterministic result) and decrypt to the same values."""
    v = np.array([[5], [-7], [1 << 40]], dtype=np.int64)
    p = np.array([[3], [4], [-5]], dtype=np.int64)
    ct = peer.deserialize(owner.serialize(owner.encrypt(v)))  # what the key holder sent
    first, second = peer.add_plain(ct, p), peer.add_plain(ct, p)
    assert peer.serialize(first) == peer.serialize(second)  # linkable: deterministic in ct and p
    r1, r2 = peer.rerandomize(first), peer.rerandomize(peer.add_plain(ct, p))
    sent = {peer.serialize(first), peer.serialize(r1), peer.serialize(r2)}
    assert len(sent) == 3
    assert peer.shape(r1) == (3, 1)
    assert np.array_equal(owner.decrypt(r1), v + p) and np.array_equal(owner.decrypt(r2), v + p)
    one_d = peer.rerandomize(peer.encrypt(v[:, 0]))  # 1-D keeps its shape
    assert peer.shape(one_d) == (3,) and list(owner.decrypt(one_d)) == list(v[:, 0])


def test_encrypt_rejects_floats(owner: HeuBackend):
    with pytest.raises(TypeError):
        owner.encrypt(np.array([0.5]))


def test_serialize_through_bytes(owner: HeuBackend, peer: HeuBackend, rng: np.random.Generator):
    v = rng.integers(-1000, 1000, size=(N, 1), dtype=np.int64)
    ct = peer.encrypt(v)
    data = peer.serialize(ct)
    assert isinstance(data, bytes)
    assert peer.n_bytes(ct) == len(data)
    per_ct = 2 * owner.key_bits // 8 if owner.scheme == "paillier" else owner.key_bits // 8  # |n^2| vs |n|
    assert per_ct * N <= len(data) <= (per_ct + 44) * N
    assert np.array_equal(owner.decrypt(owner.deserialize(data)), v)


def test_public_key_side_encrypts_and_evaluates_but_cannot_decrypt(owner: HeuBackend, peer: HeuBackend):
    assert owner.has_secret_key and not peer.has_secret_key
    assert peer.key_bits == owner.key_bits >= 1024
    a = peer.encrypt(np.array([5, -7, 11], dtype=np.int64))
    b = peer.add_plain(peer.mul_plain(a, np.array([2, 3, 4])), np.array([1, 1, 1]))
    with pytest.raises(SecretKeyRequiredError):
        peer.decrypt(b)
    with pytest.raises(RuntimeError):
        peer.decrypt_big(b)
    assert list(owner.decrypt(b)) == [11, -20, 45]


# --- element-wise and reductions ------------------------------------------------------------------------------


def test_add_sub_plain_ops(owner: HeuBackend, peer: HeuBackend, rng: np.random.Generator):
    n = 60  # decryption dominates test time
    a = rng.integers(-(2**30), 2**30, size=(n, 2), dtype=np.int64)
    b = rng.integers(-(2**30), 2**30, size=(n, 2), dtype=np.int64)
    p = rng.integers(0, 2**10, size=(n, 2), dtype=np.int64)
    ca, cb = peer.encrypt(a), peer.encrypt(b)
    assert np.array_equal(owner.decrypt(peer.add(ca, cb)), a + b)
    assert np.array_equal(owner.decrypt(peer.sub(ca, cb)), a - b)
    assert np.array_equal(owner.decrypt(peer.add_plain(ca, p)), a + p)
    assert np.array_equal(owner.decrypt(peer.mul_plain(ca, p)), a * p)
    assert np.array_equal(owner.decrypt(peer.mul_plain(ca, -3)), a * -3)  # broadcast scalar, negative
    c1 = peer.encrypt(a[:, 0])
    assert owner.decrypt(peer.mul_plain(c1, 5)).shape == (n,)  # 1-D stays 1-D
    big = np.array([1 << 200], dtype=object)
    assert list(owner.decrypt_big(peer.mul_plain(c1, big))) == [int(x) << 200 for x in a[:, 0]]


def test_sum_axes_and_row_access(owner: HeuBackend, peer: HeuBackend, rng: np.random.Generator):
    a = rng.integers(-(2**30), 2**30, size=(N, 3), dtype=np.int64)
    ca = peer.encrypt(a)
    assert np.array_equal(owner.decrypt(peer.sum(ca, axis=0)), a.sum(0, keepdims=True))
    assert np.array_equal(owner.decrypt(peer.sum(ca, axis=1)), a.sum(1, keepdims=True))
    assert np.array_equal(owner.decrypt(peer.sum(ca)), a.sum(keepdims=True))
    assert np.array_equal(owner.decrypt(peer.sum(peer.encrypt(a[:, 0]))), [[a[:, 0].sum()]])
    assert peer.shape(ca) == (N, 3)
    assert np.array_equal(owner.decrypt(peer.slice_rows(ca, 10, 20)), a[10:20])
    idx = np.array([3, 1, 150, 3])
    assert np.array_equal(owner.decrypt(peer.take_rows(ca, idx)), a[idx])


@pytest.mark.parametrize("method", ["bucket", "heu", "auto"])
def test_matmul_plain_gradient_shape(owner: HeuBackend, peer: HeuBackend, rng: np.random.Generator, method):
    """X^T [[d]] for the hetero-LR gradient, including mixed-sign and multi-chunk (> 7 bit) features."""
    d = rng.integers(-(2**20), 2**20, size=(N, 1), dtype=np.int64)
    X = rng.integers(0, 2**10, size=(N, F), dtype=np.int64)
    X[:, 1] -= 300  # mixed signs in one feature
    X[:, 2] = 0  # an all-zero feature
    X[:, 3] = rng.integers(0, 2**16, size=N)  # three 7-bit chunks
    cd = peer.encrypt(d)
    out = peer.matmul_plain(X.T, cd, method=method)
    assert peer.shape(out) == (F, 1)
    assert np.array_equal(owner.decrypt(out), X.T @ d)
    # 1-D ciphertext vector and several columns
    out1 = owner.decrypt(peer.matmul_plain(X.T, peer.encrypt(d[:, 0]), method=method))
    assert out1.shape == (F,)
    assert np.array_equal(out1, X.T @ d[:, 0])
    d2 = rng.integers(-(2**20), 2**20, size=(N, 2), dtype=np.int64)
    assert np.array_equal(owner.decrypt(peer.matmul_plain(X.T, peer.encrypt(d2), method=method)), X.T @ d2)


def test_matmul_plain_bucket_many_outputs_and_zeros(owner: HeuBackend, peer: HeuBackend, rng):
    """More than 128 output rows takes the grouped second stage; an all-zero matrix still returns ciphertexts."""
    n, m = 60, 300
    d = rng.integers(-(2**20), 2**20, size=(n, 2), dtype=np.int64)
    P = rng.integers(-5, 200, size=(m, n), dtype=np.int64)
    cd = peer.encrypt(d)
    assert np.array_equal(owner.decrypt(peer.matmul_plain(P, cd, method="bucket")), P @ d)
    Z = np.zeros((3, n), dtype=np.int64)
    assert np.array_equal(owner.decrypt(peer.matmul_plain(Z, cd, method="bucket")), np.zeros((3, 2)))


def test_rmatmul_plain(owner: HeuBackend, peer: HeuBackend, rng: np.random.Generator):
    d = rng.integers(-(2**20), 2**20, size=(1, 30), dtype=np.int64)
    X = rng.integers(0, 2**8, size=(30, F), dtype=np.int64)
    assert np.array_equal(owner.decrypt(peer.rmatmul_plain(peer.encrypt(d), X)), d @ X)


# --- SecureBoost kernels --------------------------------------------------------------------------------------


def test_bucket_sum_matches_numpy_histogram(owner: HeuBackend, peer: HeuBackend, rng: np.random.Generator):
    v = rng.integers(-(2**30), 2**30, size=(N, 1), dtype=np.int64)
    order = rng.integers(0, BINS, size=(N, F)).astype(np.int8)
    cv = peer.encrypt(v)
    out = peer.bucket_sum(cv, order, BINS)
    assert peer.shape(out) == (BINS * F, 1)
    assert np.array_equal(owner.decrypt(out), _hist(v, order, BINS).astype(np.int64))
    rows = rng.random(N) < 0.4  # node instance space
    got = owner.decrypt(peer.bucket_sum(cv, order, BINS, rows=rows))
    assert np.array_equal(got, _hist(v, order, BINS, rows).astype(np.int64))
    idx = np.flatnonzero(rows)
    assert np.array_equal(owner.decrypt(peer.bucket_sum(cv, order, BINS, rows=idx)), got)
    cum = owner.decrypt(peer.bucket_sum(cv, order, BINS, cumsum=True)).reshape(F, BINS)
    assert np.array_equal(cum, np.cumsum(_hist(v, order, BINS).reshape(F, BINS).astype(np.int64), axis=1))
    both = peer.batch_bucket_sum(cv, order, BINS, [rows, ~rows])
    assert np.array_equal(owner.decrypt(both[0]), got)
    assert np.array_equal(owner.decrypt(peer.add(both[0], both[1])), owner.decrypt(out))


def test_bucket_sum_rejects_bad_bins(peer: HeuBackend):
    cv = peer.encrypt(np.arange(4, dtype=np.int64))
    with pytest.raises(ValueError):
        peer.bucket_sum(cv, np.array([[0], [1], [8], [2]]), 8)
    with pytest.raises(ValueError):
        peer.bucket_sum(cv, np.zeros((4, 1)), 129)


def test_squeeze_unsqueeze_round_trip(owner: HeuBackend, peer: HeuBackend, rng: np.random.Generator):
    bits = 60
    k = values_per_ciphertext(peer.plaintext_bits, bits)
    assert k == peer.plaintext_bits // bits >= 5
    for m in (1, 16, 17, 18, 40, 100):
        vals = rng.integers(0, 2**bits, size=m, dtype=np.uint64).astype(object)
        ct = peer.encrypt(vals.reshape(m, 1))
        sq = peer.squeeze(ct, bits, k)
        assert peer.shape(sq) == (-(-m // k), 1)
        back = unsqueeze(owner.decrypt_big(sq), bits, k, m)
        assert list(back) == list(vals)
    with pytest.raises(ValueError):
        peer.squeeze(ct, bits, k + 1)  # would not fit the key


def test_gh_packing_histogram_compression_end_to_end(owner: HeuBackend, peer: HeuBackend, rng):
    """pack -> encrypt -> bucket_sum (node subset) -> squeeze -> bytes -> decrypt -> unsqueeze -> unpack."""
    p = 1 / (1 + np.exp(-rng.normal(size=N)))
    y = (rng.random(N) < 0.5).astype(np.float64)
    g, h = p - y, p * (1 - p)
    g[:2], h[:2] = [-1.0, 1.0], [0.0, 0.25]  # the bounds themselves
    order = rng.integers(0, BINS, size=(N, F)).astype(np.int8)
    rows = rng.random(N) < 0.6
    packer = GHPacker(N, peer.plaintext_bits, frac_bits=20)
    assert packer.bits_per_value == packer.count_bits + packer.g_bits + packer.h_bits
    k = packer.values_per_ct
    assert k >= 2

    ct = owner.encrypt(packer.pack(g, h).reshape(N, 1))  # active party
    hist = peer.bucket_sum(peer.deserialize(owner.serialize(ct)), order, BINS, rows=rows)  # passive party
    sq = peer.squeeze(hist, packer.bits_per_value, k)
    n_vals = BINS * F
    assert peer.shape(sq) == (-(-n_vals // k), 1)
    ints = unsqueeze(
        owner.decrypt_big(owner.deserialize(peer.serialize(sq))), packer.bits_per_value, k, n_vals
    )
    G, H, C = packer.unpack(ints)

    G_ref = _hist(g.astype(object), order, BINS, rows).astype(np.float64).ravel()
    H_ref = _hist(h.astype(object), order, BINS, rows).astype(np.float64).ravel()
    C_ref = _hist(np.ones(N, dtype=np.int64), order, BINS, rows).astype(np.int64).ravel()
    assert np.array_equal(C, C_ref)
    tol = N * 2.0**-21 + 1e-12  # rounding of each term is at most half an ulp of the fixed point
    assert np.max(np.abs(G - G_ref)) <= tol
    assert np.max(np.abs(H - H_ref)) <= tol

    # histogram subtraction (sibling = parent - child) stays exact slot-wise
    parent = peer.bucket_sum(ct, order, BINS)
    sib = peer.sub(parent, hist)
    Gs, Hs, Cs = packer.unpack(owner.decrypt_big(sib).ravel())
    assert np.array_equal(Cs, _hist(np.ones(N, dtype=np.int64), order, BINS, ~rows).astype(np.int64).ravel())
    assert np.max(np.abs(Gs - _hist(g.astype(object), order, BINS, ~rows).astype(np.float64).ravel())) <= tol


def test_gh_packer_guards():
    with pytest.raises(ValueError):
        GHPacker(n_samples=2**340, plaintext_bits=1022, frac_bits=20)  # slots would overflow the plaintext
    with pytest.raises(ValueError):
        GHPacker(n_samples=1000, plaintext_bits=1022, frac_bits=600)
    assert (
        GHPacker(n_samples=2**300, plaintext_bits=1022, frac_bits=20).values_per_ct == 1
    )  # 942 bits: still fits
    packer = GHPacker(n_samples=10, plaintext_bits=1022)
    with pytest.raises(ValueError):
        packer.pack(np.zeros(11), np.zeros(11))  # more rows than the slots were sized for
    with pytest.raises(ValueError):
        packer.pack(np.array([1.5]), np.array([0.1]))
    with pytest.raises(ValueError):
        packer.pack(np.array([0.5]), np.array([-0.1]))
    G, H, C = packer.unpack(packer.pack(np.array([-1.0, 0.25]), np.array([0.25, 0.0])).sum(keepdims=True))
    assert (G[0], H[0], C[0]) == (-0.75, 0.25, 2)


def test_gh_packer_without_count_slot_takes_counts():
    g, h = np.array([-1.0, 0.5, 0.25]), np.array([0.25, 0.1, 0.0])
    with_c, without = GHPacker(3, plaintext_bits=1022), GHPacker(3, plaintext_bits=1022, count_slot=False)
    assert without.bits_per_value == with_c.bits_per_value - with_c.count_bits
    total = without.pack(g, h).sum(keepdims=True)
    G, H, C = without.unpack(total, counts=np.array([3]))
    assert (G[0], C[0]) == (-0.25, 3) and abs(H[0] - 0.35) <= 2**-20
    with pytest.raises(ValueError):
        without.unpack(total)
    with pytest.raises(ValueError):
        with_c.unpack(with_c.pack(g, h), counts=np.ones(3))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_2048_bit_key_round_trip_and_histogram(scheme: str):
    """The floor itself: 2048-bit keys need no override."""
    owner = HeuBackend.generate(2048, scheme)
    peer = HeuBackend.from_public_key(owner.public_key_bytes(), scheme)
    assert peer.key_bits == owner.key_bits >= 2048 and peer.plaintext_bits == owner.plaintext_bits
    rng = np.random.default_rng(3)
    n = 50
    g, h = rng.uniform(-1, 1, n), rng.uniform(0, 0.25, n)
    order = rng.integers(0, 4, size=(n, 3)).astype(np.int8)
    packer = GHPacker(n, peer.plaintext_bits, frac_bits=30)
    hist = peer.bucket_sum(owner.encrypt(packer.pack(g, h)), order, 4)
    sq = peer.rerandomize(peer.squeeze(hist, packer.bits_per_value, packer.values_per_ct))
    assert peer.shape(sq)[0] == -(-12 // packer.values_per_ct)  # ZPaillier: all 12 bins in one; OU: 2
    G, H, C = packer.unpack(unsqueeze(owner.decrypt_big(sq), packer.bits_per_value, packer.values_per_ct, 12))
    assert np.array_equal(C, _hist(np.ones(n, np.int64), order, 4).astype(np.int64).ravel())
    assert np.max(np.abs(G - _hist(g.astype(object), order, 4).astype(np.float64).ravel())) <= n * 2.0**-31
