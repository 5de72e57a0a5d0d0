"""The PRG: keyed ChaCha20, so every key bit matters and nothing smaller than 256 bits is accepted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpc_fl.crypto.prg import KEY_BYTES, PRG, new_key


def test_same_key_same_stream_whatever_the_draw_sizes():
    key = new_key()
    a, b = PRG(key), PRG(key)
    assert torch.equal(a.ring_elements((3, 5)), b.ring_elements((15,)).view(3, 5))
    assert torch.equal(a.ring_elements((7,)), b.ring_elements((7,)))


def test_keys_differing_in_any_single_bit_give_different_streams():
    base = bytearray(new_key())
    first = PRG(bytes(base)).random_bytes(16)
    for bit in range(8 * KEY_BYTES):  # every bit, including all those above bit 32
        flipped = bytearray(base)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert PRG(bytes(flipped)).random_bytes(16) != first, bit


def test_fresh_keys_come_from_the_os_and_differ():
    assert len({new_key() for _ in range(100)}) == 100
    assert PRG.fresh().random_bytes(32) != PRG.fresh().random_bytes(32)


@pytest.mark.parametrize("key", [b"", b"x" * 8, b"x" * 16, b"x" * 31, b"x" * 33, 12345])
def test_keys_other_than_256_bits_are_refused(key):
    with pytest.raises(ValueError, match="32 bytes"):
        PRG(key)


def test_kbit_values_are_in_range_and_use_every_bit():
    prg = PRG(new_key())
    for bits in (1, 7, 32, 63):
        v = prg.kbit((4096,), bits)
        assert int(v.min()) >= 0 and int(v.max()) < 2**bits
        assert int(v.max()) >= 2 ** (bits - 1)  # the top bit is used
    with pytest.raises(ValueError):
        prg.kbit((1,), 65)


def test_ring_elements_cover_the_whole_ring_without_bias():
    v = PRG(new_key()).ring_elements((200_000,)).numpy().view(np.uint64)
    assert (v >= 2**63).mean() == pytest.approx(0.5, abs=0.01)  # sign bit
    byte_counts = np.bincount(v.view(np.uint8), minlength=256)
    expected = v.size * 8 / 256
    chi2 = float(((byte_counts - expected) ** 2 / expected).sum())
    assert chi2 < 400  # 255 degrees of freedom: p < 1e-8 beyond this


def test_permutation_is_a_permutation_and_varies():
    p = PRG(new_key()).permutation(1000)
    assert np.array_equal(np.sort(p), np.arange(1000))
    assert not np.array_equal(p, PRG(new_key()).permutation(1000))
