"""The one source of secret randomness: a ChaCha20 keystream keyed with 256 bits from the OS.

Why: the review broke every secret-sharing protocol by brute-forcing torch's MT19937
seeds (32 effective bits, ../shared/docs/security_review.md F1). Every mask, share,
triple, key and secret split in mpc_fl is drawn here instead: ChaCha20 (RFC 8439,
``cryptography``'s OpenSSL binding) run as a stream cipher over zeros, keyed with
``os.urandom(32)``. Two parties that must draw the same stream (a party and the
dealer, two neighbours' zero shares) share the key over an authenticated, encrypted
link and then draw in the same order.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

if TYPE_CHECKING:  # torch is imported where ring elements are drawn: the CLI's light commands never load it
    import torch

KEY_BYTES = 32
#: Independent streams per key: the 12-byte ChaCha20 nonce numbers them (stream 0 is :class:`PRG`'s default).
MAX_STREAMS = 1 << 96
#: Keystream is produced in chunks of this many bytes (bounded scratch memory for huge draws).
_CHUNK = 1 << 22
_ZEROS = memoryview(bytes(_CHUNK))  # the plaintext: read only, shared by every PRG


def new_key() -> bytes:
    """256 fresh bits from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


class PRG:
    """A deterministic stream of uniform bytes from a 256-bit key (ChaCha20, nonce ``stream``).

    The key is never derived from anything smaller: a key of any other length is refused.
    ``stream`` picks one of the key's independent streams (default 0, one stream per key).
    """

    def __init__(self, key: bytes, stream: int = 0):
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise ValueError(f"a PRG key is {KEY_BYTES} bytes from os.urandom; got {type(key).__name__}")
        if not 0 <= stream < MAX_STREAMS:
            raise ValueError(f"stream must be in [0, 2^96), got {stream}")
        # 16-byte nonce field: 4-byte block counter (0) and the 12-byte nonce (the stream number)
        nonce = bytes(4) + stream.to_bytes(12, "little")
        self._cipher = Cipher(algorithms.ChaCha20(bytes(key), nonce), mode=None).encryptor()
        self._zeros = _ZEROS
        self.bytes_drawn = 0

    @classmethod
    def fresh(cls) -> PRG:
        """A PRG under a new OS-random key that nobody else holds."""
        return cls(new_key())

    def fill(self, out: memoryview) -> None:
        """Overwrite ``out`` (a writable byte view) with the next ``len(out)`` keystream bytes."""
        n = len(out)
        pos = 0
        while pos < n:
            m = min(_CHUNK, n - pos)
            self._cipher.update_into(self._zeros[:m], out[pos : pos + m])  # keystream XOR 0, in place
            pos += m
        self.bytes_drawn += n

    def skip(self, n: int) -> None:
        """Discard the next ``n`` keystream bytes (seek forward within a stream)."""
        scratch = bytearray(min(n, _CHUNK))
        while n > 0:
            m = min(n, len(scratch))
            self.fill(memoryview(scratch)[:m])
            n -= m

    def random_bytes(self, n: int) -> bytes:
        buf = bytearray(n)
        self.fill(memoryview(buf))
        return bytes(buf)

    def uint64(self, shape: tuple[int, ...] | int) -> np.ndarray:
        """Uniform 64-bit words."""
        out = np.empty(shape, dtype=np.uint64)
        self.fill(memoryview(out.reshape(-1).view(np.uint8)))
        return out

    def ring_elements(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform elements of Z_{2^64} as int64 (CrypTen's ring)."""
        import torch

        out = torch.empty(tuple(shape), dtype=torch.int64)
        if out.numel():
            self.fill(memoryview(out.numpy().reshape(-1).view(np.uint8)))
        return out

    def kbit(self, shape: tuple[int, ...] | torch.Size, bits: int) -> torch.Tensor:
        """Uniform integers in ``[0, 2^bits)`` (``bits`` <= 64; 64 gives the whole ring)."""
        if not 1 <= bits <= 64:
            raise ValueError(f"bits must be in 1..64, got {bits}")
        out = self.ring_elements(shape)
        if bits < 64:
            out &= (1 << bits) - 1
        return out

    def permutation(self, n: int) -> np.ndarray:
        """A uniformly random permutation of ``range(n)``: the order of n random 128-bit keys."""
        keys = self.uint64((n, 2))
        return np.lexsort((keys[:, 1], keys[:, 0]))


def fill_ring_rows(key: bytes, stream: int, out: torch.Tensor, skip_bytes: int = 0) -> None:
    """Overwrite the contiguous int64 tensor ``out`` with stream ``stream`` of ``key``, from byte ``skip_bytes``.

    Why: a mask too large to hold (a million-row fixed-mask matrix) is cut into numbered
    pieces, each its own stream under one key, so any piece can be regenerated on its own,
    in place, by whoever holds the key (:class:`mpc_fl.crypto.dealer.RowBlockMask`).
    """
    import torch

    if not out.is_contiguous() or out.dtype != torch.int64:
        raise ValueError("fill_ring_rows writes into a contiguous int64 tensor")
    prg = PRG(key, stream)
    if skip_bytes:
        prg.skip(skip_bytes)
    if out.numel():
        prg.fill(memoryview(out.numpy().reshape(-1).view(np.uint8)))


def ring_block(key: bytes, stream: int, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Uniform elements of Z_{2^64} (int64) from stream ``stream`` of ``key``: one regenerable piece."""
    import torch

    out = torch.empty(tuple(shape), dtype=torch.int64)
    fill_ring_rows(key, stream, out)
    return out
