"""The PRG: keyed ChaCha20, so every key bit matters and nothing smaller than 256 bits is accepted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpc_fl.crypto.prg import KEY_BYTES, MAX_STREAMS, PRG, fill_ring_rows, new_key, ring_block


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


def test_numbered_streams_stream_0_is_the_default_and_the_others_are_independent():
    key = new_key()
    assert PRG(key, 0).random_bytes(64) == PRG(key).random_bytes(64)
    firsts = {PRG(key, s).random_bytes(32) for s in (0, 1, 2, 2**32, 2**95 + 7, MAX_STREAMS - 1)}
    assert len(firsts) == 6  # the whole 96-bit nonce numbers streams (not only its low word)
    for bad in (-1, MAX_STREAMS):
        with pytest.raises(ValueError, match="stream"):
            PRG(key, bad)


def test_ring_block_regenerates_any_piece_alone_and_in_place():
    key = new_key()
    one_piece = PRG(key, 5).ring_elements((30, 4))
    assert torch.equal(ring_block(key, 5, (30, 4)), one_piece)
    out = torch.empty(30, 4, dtype=torch.int64)
    fill_ring_rows(key, 5, out[:11])
    fill_ring_rows(key, 5, out[11:], skip_bytes=11 * 4 * 8)  # seeks past the first 11 rows
    assert torch.equal(out, one_piece)
    assert not torch.equal(ring_block(key, 6, (30, 4)), one_piece)
    with pytest.raises(ValueError, match="contiguous int64"):
        fill_ring_rows(key, 5, out.t())
