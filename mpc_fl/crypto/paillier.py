"""Additively homomorphic backend for the FATE/SecretFlow-style baselines (hetero-LR, SecureBoost).

The protocols talk to :class:`PaillierBackend` only, so another library can stand in for HEU without touching
protocol code. :class:`HeuBackend` runs either of HEU's two recommended schemes (:data:`SCHEMES`):

* ``paillier``: HEU ``ZPaillier`` (DJN short-exponent encryption); plaintexts mod n (``key_bits - 2`` usable bits).
* ``ou``: HEU ``OU`` (Okamoto-Uchiyama, n = p^2 q, Coron-Naccache-Paillier acceleration), SecretFlow SGB's
  default: 10-17x faster to encrypt and decrypt and half the ciphertext bytes of ZPaillier at equal key size;
  plaintexts mod the secret p (~key_bits / 3 bits, so fewer packing slots).

Security per key size (:data:`SCHEMES` says it in one line each). Paillier: 2048 bits ~112-bit, 3072 ~128-bit
security (factoring n; NIST SP 800-57 Part 1 Rev. 5, Table 2; HEU's ``algo_choice`` doc gives the same). OU: the
best known attacks are the number field sieve on n (same cost as for an RSA modulus of that size: 112 / 128
bits at 2048 / 3072) and the elliptic-curve method on the ~|n|/3-bit factor p (L_p[1/2, sqrt 2], Lenstra 1987:
about 2^110 at 2048, 2^139 at 3072); HEU's doc notes that some papers ask for n 500-600 bits longer than
Paillier's for parity (citing Boneh-Durfee-Howgrave-Graham, CRYPTO 1999). So the baselines default to OU at
3072 bits, at least as strong as ZPaillier at 2048 under every one of these estimates, and accept OU from 2048
bits (SecretFlow's default size) as a clearly labelled case.

Conventions (all backends):

* Plaintexts are integers. Callers encode floats themselves with :func:`encode_fixed` (rounds, HEU's float encoder
  truncates). ``int64`` arrays are the fast path; ``object`` arrays of Python ints carry values wider than 63 bits
  (packed GH values, squeezed histograms). :attr:`PaillierBackend.plaintext_bits` is how wide a non-negative
  plaintext may be (packing sizes its slots from it).
* Ciphertexts are an opaque handle (``Ciphertexts``) of shape ``(n,)`` or ``(n, k)``; row slicing/gathering go through
  backend methods.
* Ciphertext x plaintext costs one modular exponentiation whose exponent is the plaintext: keep multipliers
  non-negative and narrow (HEU is ~4x slower on negative scalars). :meth:`PaillierBackend.matmul_plain` avoids
  exponentiations altogether for tall plaintext matrices (bucket method, see there).

Key floor: moduli below :data:`MIN_KEY_BITS` (2048) are refused for either scheme, both when a key is generated
and when a peer's public key is loaded (which must also be of the scheme the run agreed on), so neither party can
be talked into a weak key or another scheme. Unit tests use 1024-bit keys for speed through
:func:`allow_short_keys_for_tests`, which nothing outside the tests calls.

Decryptions in range: OU decrypts modulo the secret p, so a key holder that reveals the decryption of a
ciphertext its peer built that overflowed p hands the peer a multiple of p (``gcd`` with n factors it: HEU's
doc, "OU plaintext overflow attack"). Every value a key holder decrypts from its peer is checked against the
range the protocol allows (:func:`check_range`, :func:`unsqueeze`, :meth:`GHPacker.unpack`) before anything
derived from it leaves the key holder; an overflowed OU plaintext lands in that range with probability below
2^-(|p| - range bits).

Re-randomisation: homomorphic results are deterministic functions of the input ciphertexts, so a ciphertext sent back
to the key holder lets it test guesses about the evaluator's plaintext operands (which rows fell in which bin, the
features it multiplied by) against the randomness of ciphertexts it made itself. Every ciphertext a party returns
goes through :meth:`PaillierBackend.rerandomize` (adds a fresh encryption of zero) first.

SecureBoost helpers: :class:`GHPacker` packs (count, g, h) of a sample into one plaintext (SecureBoost+ "GH packing");
:meth:`PaillierBackend.squeeze` / :func:`unsqueeze` fold several packed histogram bins into one ciphertext ("cipher
compression") so the active party decrypts and receives ``values_per_ct`` times fewer ciphertexts.
"""

from __future__ import annotations

import abc
import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Ciphertexts",
    "GHPacker",
    "HeuBackend",
    "MIN_KEY_BITS",
    "PaillierBackend",
    "SCHEMES",
    "Scheme",
    "SecretKeyRequiredError",
    "allow_short_keys_for_tests",
    "check_he_options",
    "check_key_bits",
    "check_range",
    "decode_fixed",
    "encode_fixed",
    "resolve_key_bits",
    "unsqueeze",
    "values_per_ciphertext",
]

#: Opaque ciphertext array of the backend (HEU: ``heu.numpy.CiphertextArray``).
Ciphertexts = Any

#: ``feature_wise_bucket_sum`` takes an int8 bin map, so at most 128 bins (0..127) per feature.
MAX_BINS = 128
#: Chunk width of the bucket-method matmul (one int8 bucket map per 7-bit chunk of the plaintext).
_CHUNK_BITS = 7


#: Smallest accepted modulus for either scheme: factoring-based keys below 2048 bits are below ~112-bit security
#: (NIST SP 800-57), and 1024-bit moduli are within reach of well-funded attackers.
MIN_KEY_BITS = 2048


@dataclass(frozen=True)
class Scheme:
    """One additively homomorphic scheme of HEU, as the baselines use it."""

    name: str
    #: ``heu.phe.SchemaType`` member
    heu_schema: str
    #: key size the baselines use unless told otherwise
    default_key_bits: int
    #: security per key size, and where the estimate comes from
    security: str


#: The schemes a baseline can run (``--param scheme=...``): every list of schemes reads this.
SCHEMES: dict[str, Scheme] = {
    "ou": Scheme(
        "ou", "OU", 3072,
        "Okamoto-Uchiyama (n = p^2 q): 3072 bits >= 128-bit by NFS on n and ~139-bit by ECM on p; 2048 bits "
        "112-bit by NFS, ~110-bit by ECM, and disputed (HEU algo_choice doc: some papers ask n 500-600 bits "
        "longer than Paillier's)",
    ),
    "paillier": Scheme(
        "paillier", "ZPaillier", 2048,
        "Paillier (DCRA, DJN short exponent): 2048 bits ~112-bit, 3072 bits ~128-bit (NIST SP 800-57 Pt 1 "
        "Rev 5, Table 2)",
    ),
}  # fmt: skip
#: the baselines' scheme unless told otherwise: the faster one at (at least) equal security
DEFAULT_SCHEME = "ou"


class SecretKeyRequiredError(RuntimeError):
    """Raised when a public-key-only backend (the passive party's) is asked to decrypt."""


def check_key_bits(bits: int, what: str = "key_bits", scheme: str = "paillier") -> None:
    """One-line ValueError below :data:`MIN_KEY_BITS` (read at call time, so the test override applies)."""
    if int(bits) < MIN_KEY_BITS:
        label = "Paillier" if scheme == "paillier" else scheme.upper()
        raise ValueError(
            f"{label} keys below {MIN_KEY_BITS} bits are refused (got {int(bits)}, {what}); "
            f"use key_bits >= {MIN_KEY_BITS}"
        )


def resolve_key_bits(scheme: str, key_bits: int) -> int:
    """``key_bits``, or the scheme's default where it is 0."""
    return int(key_bits) or SCHEMES[scheme].default_key_bits


def check_he_options(options: Mapping[str, Any]) -> None:
    """Validate ``scheme`` and ``key_bits`` of a baseline before anything connects (one line each)."""
    scheme = options.get("scheme", DEFAULT_SCHEME)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    bits = int(options.get("key_bits", 0))
    if bits:
        check_key_bits(bits, "key_bits", scheme)


def check_range(values: np.ndarray, bits: int, what: str) -> None:
    """Refuse decrypted values with ``|v| >= 2**bits``: the protocol never makes them (see "Decryptions in range")."""
    bound = 1 << int(bits)
    flat = np.asarray(values, dtype=object).ravel()
    if any(not -bound < int(v) < bound for v in flat):
        raise ValueError(
            f"{what} decrypted outside the range the protocol allows (|value| < 2^{bits}): refusing to use it "
            f"(a ciphertext that overflowed the plaintext space, as in the OU key-recovery attack, or a peer "
            f"that is not following the protocol)"
        )


@contextlib.contextmanager
def allow_short_keys_for_tests(min_bits: int = 1024) -> Iterator[None]:
    """TEST-ONLY: lower the key floor to ``min_bits`` inside the block (1024-bit keys keep unit tests fast).

    Only test code may call this: the CLI, demo and benchmarks never do, so real runs always meet
    :data:`MIN_KEY_BITS`. It rebinds the module global, hence covers every thread of the process.
    """
    global MIN_KEY_BITS
    saved = MIN_KEY_BITS
    MIN_KEY_BITS = int(min_bits)
    try:
        yield
    finally:
        MIN_KEY_BITS = saved


# ---------------------------------------------------------------------------------------------------------------
# fixed point
# ---------------------------------------------------------------------------------------------------------------


def encode_fixed(x: np.ndarray | float, frac_bits: int) -> np.ndarray:
    """Round ``x * 2**frac_bits`` to int64 (round-to-nearest: truncation would bias sums of non-negative values)."""
    v = np.rint(np.asarray(x, dtype=np.float64) * (2.0**frac_bits))
    if not np.all(np.isfinite(v)) or (v.size and np.max(np.abs(v)) >= 2.0**63):
        raise ValueError(f"value does not fit int64 at frac_bits={frac_bits}")
    return v.astype(np.int64)


def decode_fixed(v: np.ndarray | int, frac_bits: int) -> np.ndarray:
    """Inverse of :func:`encode_fixed`; also accepts object arrays of Python ints (exact int/int division)."""
    a = np.asarray(v)
    if a.dtype == object:
        den = 1 << frac_bits
        return np.array([int(e) / den for e in a.ravel()], dtype=np.float64).reshape(a.shape)
    return a.astype(np.float64) / (2.0**frac_bits)


# ---------------------------------------------------------------------------------------------------------------
# capacity helpers
# ---------------------------------------------------------------------------------------------------------------


def values_per_ciphertext(plaintext_bits: int, bits_per_value: int) -> int:
    """How many ``bits_per_value``-bit slots fit in a ``plaintext_bits``-bit plaintext (the squeeze factor)."""
    return int(plaintext_bits) // int(bits_per_value)


def _squeeze_layout(n_values: int, values_per_ct: int) -> tuple[int, int]:
    """(number of squeezed ciphertexts q, slots used per ciphertext) for ``n_values`` inputs."""
    q = -(-n_values // values_per_ct)
    return q, -(-n_values // q)


def unsqueeze(
    ints: np.ndarray | Sequence[int], bits_per_value: int, values_per_ct: int, n_values: int
) -> np.ndarray:
    """Split decrypted squeezed plaintexts back into ``n_values`` non-negative values (object array of ints).

    Layout written by :meth:`PaillierBackend.squeeze`: ciphertext ``g`` holds, from the highest slot down, values
    ``min(j*q, n-q) + g`` for ``j = 0..slots-1`` (the last slot may repeat values; duplicates are ignored).
    """
    q, slots = _squeeze_layout(n_values, values_per_ct)
    flat = [int(x) for x in np.asarray(ints, dtype=object).ravel()]
    if len(flat) != q:
        raise ValueError(f"expected {q} squeezed values for n_values={n_values}, got {len(flat)}")
    mask = (1 << bits_per_value) - 1
    top = 1 << (bits_per_value * slots)
    out = np.empty(n_values, dtype=object)
    for g, x in enumerate(flat):
        if not 0 <= x < top:  # nothing the protocol computes lands here (see "Decryptions in range")
            raise ValueError(
                f"squeezed plaintext outside [0, 2^{bits_per_value * slots}): a slot overflowed, or the "
                f"ciphertext is not a histogram the protocol made"
            )
        for j in range(slots):
            out[min(j * q, n_values - q) + g] = (x >> (bits_per_value * (slots - 1 - j))) & mask
    return out


# ---------------------------------------------------------------------------------------------------------------
# GH packing
# ---------------------------------------------------------------------------------------------------------------


class GHPacker:
    """Packs (count=1, g, h) of each sample into one non-negative integer: ``[count | g + g_bound | h]``.

    Why a count slot: the active party must remove the g offset (``g_bound`` per row) from every bin sum but does
    not know how many of the passive party's rows fell into each bin; carrying a 1 per row lets it recover the
    count from the same decryption (FATE sends the count in plaintext instead; both reveal it to the active party).
    ``count_slot=False`` drops the slot (``[g + g_bound | h]``, ~15 bits fewer per bin at 30k rows, so a larger
    squeeze factor) for protocols that ship per-bin counts another way; then :meth:`unpack` needs ``counts``.
    Slot widths are sized for sums over ``n_samples`` rows, so any bin sum - and any parent-minus-child histogram
    difference, where every slot stays non-negative - is exact.
    """

    def __init__(
        self,
        n_samples: int,
        plaintext_bits: int,
        frac_bits: int = 20,
        g_bound: float = 1.0,
        h_bound: float = 0.25,
        count_slot: bool = True,
    ) -> None:
        if n_samples < 1 or frac_bits < 0 or g_bound <= 0 or h_bound <= 0:
            raise ValueError("n_samples >= 1, frac_bits >= 0, g_bound > 0, h_bound > 0 required")
        self.n_samples = int(n_samples)
        #: width of a non-negative plaintext of the key (:attr:`PaillierBackend.plaintext_bits`)
        self.plaintext_bits = int(plaintext_bits)
        self.frac_bits = int(frac_bits)
        self.g_bound = float(g_bound)
        self.h_bound = float(h_bound)
        self._g_offset = round(self.g_bound * 2**self.frac_bits)  # integer offset added to every encoded g
        g_max = 2 * self._g_offset  # largest encoded g + offset
        h_max = math.ceil(self.h_bound * 2**self.frac_bits)
        self.h_bits = max(1, (self.n_samples * h_max).bit_length())
        self.g_bits = max(1, (self.n_samples * g_max).bit_length())
        self.count_slot = bool(count_slot)
        self.count_bits = self.n_samples.bit_length() if self.count_slot else 0
        #: width of one packed value (and of one bin sum): the slot width for :meth:`PaillierBackend.squeeze`
        self.bits_per_value = self.h_bits + self.g_bits + self.count_bits
        if self.bits_per_value > self.plaintext_bits:
            raise ValueError(
                f"{self.bits_per_value}-bit packed value does not fit a {self.plaintext_bits}-bit plaintext "
                f"(n_samples={self.n_samples}, frac_bits={self.frac_bits}); lower frac_bits or n_samples"
            )
        #: bins per ciphertext after squeezing
        self.values_per_ct = values_per_ciphertext(self.plaintext_bits, self.bits_per_value)
        self._g_shift = self.h_bits
        self._c_shift = self.h_bits + self.g_bits

    def pack(self, g: np.ndarray, h: np.ndarray) -> np.ndarray:
        """1-D object array of Python ints, one packed plaintext per sample (encrypt with ``backend.encrypt``)."""
        g = np.asarray(g, dtype=np.float64).ravel()
        h = np.asarray(h, dtype=np.float64).ravel()
        if g.shape != h.shape:
            raise ValueError("g and h must have the same length")
        if g.size > self.n_samples:
            raise ValueError(f"{g.size} samples > n_samples={self.n_samples} the slots were sized for")
        gi = encode_fixed(g, self.frac_bits) + self._g_offset
        hi = encode_fixed(h, self.frac_bits)
        if g.size and (gi.min() < 0 or gi.max() > 2 * self._g_offset):
            raise ValueError(f"g outside [-{self.g_bound}, {self.g_bound}]")
        if h.size and (hi.min() < 0 or hi.max() > math.ceil(self.h_bound * 2**self.frac_bits)):
            raise ValueError(f"h outside [0, {self.h_bound}]")
        base = (1 << self._c_shift) if self.count_slot else 0
        gs = self._g_shift
        out = np.empty(g.size, dtype=object)
        out[:] = [base | (a << gs) | b for a, b in zip(gi.tolist(), hi.tolist(), strict=True)]
        return out

    def unpack(
        self, sums: np.ndarray | Sequence[int], counts: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decrypted bin sums -> (G, H) float64 and counts int64, same shape as ``sums``.

        ``counts`` (rows per bin) is read from the count slot; pass it only for ``count_slot=False``.
        """
        a = np.asarray(sums, dtype=object)
        if self.count_slot == (counts is not None):
            raise ValueError("pass counts exactly when the packer has no count slot")
        given = None if counts is None else np.asarray(counts, dtype=np.int64).ravel()
        if given is not None and given.size != a.size:
            raise ValueError("counts must have one entry per sum")
        hm = (1 << self.h_bits) - 1
        gm = (1 << self.g_bits) - 1
        den = 1 << self.frac_bits
        G = np.empty(a.size, dtype=np.float64)
        H = np.empty(a.size, dtype=np.float64)
        C = np.empty(a.size, dtype=np.int64)
        for i, x in enumerate(a.ravel()):
            x = int(x)
            if x < 0 or x >> self.bits_per_value:
                raise ValueError("packed sum out of range: overflow or wrong packer")
            c = x >> self._c_shift if given is None else int(given[i])
            C[i] = c
            G[i] = (((x >> self._g_shift) & gm) - c * self._g_offset) / den
            H[i] = (x & hm) / den
        return G.reshape(a.shape), H.reshape(a.shape), C.reshape(a.shape)


# ---------------------------------------------------------------------------------------------------------------
# backend interface
# ---------------------------------------------------------------------------------------------------------------


class PaillierBackend(abc.ABC):
    """Additively homomorphic encryption of integer arrays, as the two Paillier protocols use it.

    Shapes follow numpy: ``(n,)`` or ``(n, k)``; element-wise ops take equal shapes or a ``(1,)``/``(1, 1)``
    plaintext broadcast. ``sum`` and ``bucket_sum`` return 2-D; ``matmul_plain`` follows numpy (1-D in, 1-D out).
    """

    key_bits: int
    #: a non-negative plaintext below ``2**plaintext_bits`` never wraps (Paillier: ``key_bits - 2``; OU: ``|p| - 1``)
    plaintext_bits: int
    #: the scheme's name in :data:`SCHEMES`
    scheme: str

    # --- keys -----------------------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def generate(cls, key_bits: int, scheme: str = "paillier") -> PaillierBackend:
        """New key pair of ``scheme``; the result can decrypt (active party)."""

    @classmethod
    @abc.abstractmethod
    def from_public_key(cls, data: bytes, scheme: str = "paillier") -> PaillierBackend:
        """Encrypt/evaluate-only backend from :meth:`public_key_bytes` (passive party); refuses another scheme."""

    @abc.abstractmethod
    def public_key_bytes(self) -> bytes: ...

    @property
    @abc.abstractmethod
    def has_secret_key(self) -> bool: ...

    # --- en/decryption and wire format ----------------------------------------------------------------------
    @abc.abstractmethod
    def encrypt(self, values: np.ndarray) -> Ciphertexts:
        """Encrypt integer plaintexts (int64, or object array of Python ints), 1-D or 2-D."""

    @abc.abstractmethod
    def decrypt_big(self, ct: Ciphertexts) -> np.ndarray:
        """Decrypt to an object array of Python ints (packed/squeezed values)."""

    def decrypt(self, ct: Ciphertexts) -> np.ndarray:
        """Decrypt to int64; ValueError if a value does not fit (use :meth:`decrypt_big`)."""
        big = self.decrypt_big(ct)
        try:
            return big.astype(np.int64)
        except OverflowError as e:
            raise ValueError("plaintext does not fit int64; use decrypt_big") from e

    @abc.abstractmethod
    def serialize(self, ct: Ciphertexts) -> bytes: ...

    @abc.abstractmethod
    def deserialize(self, data: bytes) -> Ciphertexts: ...

    def n_bytes(self, ct: Ciphertexts) -> int:
        """Size on the wire (what the channel ledger should count)."""
        return len(self.serialize(ct))

    def rerandomize(self, ct: Ciphertexts) -> Ciphertexts:
        """Same plaintexts, fresh randomness: ``ct * Enc(0)``. Call on every ciphertext sent back to the key holder.

        Without it a homomorphic result is a deterministic function of the key holder's ciphertexts and the
        evaluator's plaintext operands, which the key holder (knowing its own encryption randomness) can test
        guesses against. Costs one encryption per ciphertext (HEU, 2048 bits: 0.3-1 ms on 2 cores); backends
        with a native operation may override.
        """
        return self.add(ct, self.encrypt(np.zeros(self.shape(ct), dtype=np.int64)))

    # --- shape ----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def shape(self, ct: Ciphertexts) -> tuple[int, ...]: ...

    @abc.abstractmethod
    def slice_rows(self, ct: Ciphertexts, start: int, stop: int) -> Ciphertexts:
        """Rows ``start:stop`` (a mini-batch)."""

    @abc.abstractmethod
    def take_rows(self, ct: Ciphertexts, rows: np.ndarray | Sequence[int]) -> Ciphertexts:
        """Rows gathered by index."""

    # --- homomorphic ops ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def add(self, a: Ciphertexts, b: Ciphertexts) -> Ciphertexts: ...

    @abc.abstractmethod
    def sub(self, a: Ciphertexts, b: Ciphertexts) -> Ciphertexts: ...

    @abc.abstractmethod
    def add_plain(self, a: Ciphertexts, p: np.ndarray | int) -> Ciphertexts: ...

    @abc.abstractmethod
    def mul_plain(self, a: Ciphertexts, p: np.ndarray | int) -> Ciphertexts:
        """Element-wise ``a * p``; keep ``p`` non-negative and narrow, it is the exponent."""

    @abc.abstractmethod
    def matmul_plain(self, p: np.ndarray, ct: Ciphertexts) -> Ciphertexts:
        """``p @ ct`` for a plaintext ``(m, n)`` integer matrix and ciphertexts ``(n, k)`` -> ``(m, k)`` (``(n,)`` -> ``(m,)``).

        Hetero-LR gradient ``X^T [[d]]``: call ``matmul_plain(X.T, ct_d)`` (``X.T`` is a view, no copy).
        """

    @abc.abstractmethod
    def rmatmul_plain(self, ct: Ciphertexts, p: np.ndarray) -> Ciphertexts:
        """``ct @ p`` for ciphertexts ``(k, n)`` and a plaintext ``(n, m)`` -> ``(k, m)``."""

    @abc.abstractmethod
    def sum(self, ct: Ciphertexts, axis: int | None = None) -> Ciphertexts:
        """Sum with keepdims: axis 0 -> (1, k), axis 1 -> (n, 1), None -> (1, 1); 1-D is a column."""

    @abc.abstractmethod
    def bucket_sum(
        self,
        ct: Ciphertexts,
        order: np.ndarray,
        n_bins: int,
        rows: np.ndarray | None = None,
        cumsum: bool = False,
    ) -> Ciphertexts:
        """SecureBoost histogram: ``out[j*n_bins + b] = sum of ct[i] over rows i with order[i, j] == b``.

        ``ct`` is ``(n,)``/``(n, k)``, ``order`` ``(n, n_features)`` bin indices in ``[0, n_bins)``, n_bins <= 128;
        ``rows`` restricts to a node's instance space (bool mask of length n, or row indices). Output
        ``(n_bins * n_features, k)``; ``cumsum`` gives per-feature prefix sums over bins.
        """

    @abc.abstractmethod
    def batch_bucket_sum(
        self,
        ct: Ciphertexts,
        order: np.ndarray,
        n_bins: int,
        rows_list: Sequence[np.ndarray],
        cumsum: bool = False,
    ) -> list[Ciphertexts]:
        """:meth:`bucket_sum` for several nodes (row subsets) in one native call (one tree layer)."""

    # --- cipher compression (generic) ------------------------------------------------------------------------
    def squeeze(self, ct: Ciphertexts, bits_per_value: int, values_per_ct: int) -> Ciphertexts:
        """Fold ``values_per_ct`` ciphertexts of non-negative ``bits_per_value``-bit values into one.

        Horner on row slices (``acc <- acc * 2**bits + next``): per output ciphertext only ``slots - 1``
        exponentiations with a ``bits``-bit exponent. Ciphertext ``g`` of ``q = ceil(m / values_per_ct)`` holds
        rows ``min(j*q, m-q) + g``; the last slot overlaps earlier rows instead of needing a concatenation.
        Decode with :func:`unsqueeze`. Works on ``(m,)`` or ``(m, 1)``; keeps the ndim.
        """
        m = self.shape(ct)[0]
        if values_per_ct < 1 or bits_per_value < 1:
            raise ValueError("values_per_ct and bits_per_value must be >= 1")
        if values_per_ct * bits_per_value > self.plaintext_bits:
            raise ValueError(
                f"{values_per_ct} x {bits_per_value} bits do not fit a {self.plaintext_bits}-bit plaintext"
            )
        q, slots = _squeeze_layout(m, values_per_ct)
        acc = self.slice_rows(ct, 0, q)
        shift = np.full((1,) * len(self.shape(ct)), 1 << bits_per_value, dtype=object)
        for j in range(1, slots):
            start = min(j * q, m - q)
            acc = self.add(self.mul_plain(acc, shift), self.slice_rows(ct, start, start + q))
        return acc


# ---------------------------------------------------------------------------------------------------------------
# HEU implementation
# ---------------------------------------------------------------------------------------------------------------


def _heu() -> tuple[Any, Any]:
    from heu import numpy as hnp
    from heu import phe

    return phe, hnp


def _rows_mask(rows: np.ndarray | Sequence[int] | None, n: int) -> np.ndarray:
    """HEU subgroup map: int8 (1, n) of 0/1."""
    if rows is None:
        return np.ones((1, n), dtype=np.int8)
    r = np.asarray(rows)
    if r.dtype == bool:
        if r.shape != (n,):
            raise ValueError(f"row mask must have shape ({n},), got {r.shape}")
        return r.astype(np.int8).reshape(1, n)
    mask = np.zeros((1, n), dtype=np.int8)
    mask[0, r.astype(np.int64)] = 1
    return mask


def _check_order(order: np.ndarray, n: int, n_bins: int) -> np.ndarray:
    if not 1 <= n_bins <= MAX_BINS:
        raise ValueError(f"n_bins must be in [1, {MAX_BINS}] (int8 bin map)")
    o = np.asarray(order)
    if o.ndim != 2 or o.shape[0] != n:
        raise ValueError(f"order must have shape ({n}, n_features), got {o.shape}")
    if o.size and (o.min() < 0 or o.max() >= n_bins):
        raise ValueError(f"bin indices must lie in [0, {n_bins})")
    return np.ascontiguousarray(o, dtype=np.int8)


_MODULUS = re.compile(r"\bn=([0-9A-Fa-f]+)")


def _modulus_bits(public_key: Any) -> int:
    """Bit length of n from HEU's public key (HEU has no accessor; its text form prints n in hex)."""
    found = _MODULUS.search(str(public_key))
    if found is None:
        raise ValueError("cannot read the modulus of the peer's public key")
    return int(found.group(1), 16).bit_length()


class HeuBackend(PaillierBackend):
    """HEU (sf-heu 0.5.2b0) ``ZPaillier`` or ``OU``; uses HEU's internal thread pool (all cores)."""

    def __init__(self, kit: Any, scheme: str, key_bits: int, has_secret_key: bool) -> None:
        """Use :meth:`generate` or :meth:`from_public_key`."""
        self._kit = kit
        self.scheme = scheme
        self.key_bits = key_bits
        # a non-negative value below 2^(bits(bound) - 1) <= bound encrypts and decrypts exactly
        self.plaintext_bits = kit.public_key().plaintext_bound().bit_count() - 1
        self._has_sk = has_secret_key
        self._int = kit.integer_encoder(scale=1)  # default scale is 1e6: must be 1 for raw integers
        self._big = kit.bigint_encoder()
        self._enc = kit.encryptor()
        self._ev = kit.evaluator()
        self._dec = kit.decryptor() if has_secret_key else None

    @classmethod
    def generate(cls, key_bits: int, scheme: str = "paillier") -> HeuBackend:
        """New key pair of ``scheme``; refuses ``key_bits`` below :data:`MIN_KEY_BITS`."""
        spec = SCHEMES[scheme]
        check_key_bits(key_bits, scheme=scheme)
        phe, hnp = _heu()
        kit = hnp.setup(getattr(phe.SchemaType, spec.heu_schema), int(key_bits))
        return cls(kit, scheme, _modulus_bits(kit.public_key()), True)

    @classmethod
    def from_public_key(cls, data: bytes, scheme: str = "paillier") -> HeuBackend:
        """Load the peer's key, refusing another scheme than ``scheme`` or a modulus below :data:`MIN_KEY_BITS`.

        The receiving party checks for itself: it is the one whose data the key will protect. HEU also loads
        e.g. ``Mock`` keys (no encryption at all) from the same wire format, hence the schema check.
        """
        phe, hnp = _heu()
        spec = SCHEMES[scheme]
        try:
            pk = phe.PublicKey.load_from(data)
        except Exception as err:  # noqa: BLE001 - HEU raises its own error types
            raise ValueError(f"the peer's public key cannot be read ({str(err)[:80]})") from None
        kit = hnp.setup(pk)
        got = kit.get_schema()
        if got != getattr(phe.SchemaType, spec.heu_schema):
            raise ValueError(
                f"peer sent a {got.name} public key; this run agreed on {spec.heu_schema} (scheme={scheme})"
            )
        bits = _modulus_bits(pk)
        check_key_bits(bits, "public key received from the peer", scheme)
        return cls(kit, scheme, bits, False)

    def public_key_bytes(self) -> bytes:
        return bytes(self._kit.public_key().serialize())

    @property
    def has_secret_key(self) -> bool:
        return self._has_sk

    # --- encoding -------------------------------------------------------------------------------------------
    def _pt(self, p: np.ndarray | int, ndim: int | None = None) -> Any:
        a = np.asarray(p)
        if ndim is not None and a.ndim == 0:
            a = a.reshape((1,) * ndim)
        if a.dtype == object:
            return self._kit.array(a, self._big)
        if a.dtype.kind not in "iub":
            raise TypeError(f"plaintexts must be integers (encode floats with encode_fixed), got {a.dtype}")
        return self._kit.array(a.astype(np.int64, copy=False), self._int)

    # --- en/decryption --------------------------------------------------------------------------------------
    def encrypt(self, values: np.ndarray) -> Ciphertexts:
        a = np.asarray(values)
        if a.ndim not in (1, 2):
            raise ValueError("encrypt takes 1-D or 2-D arrays")
        return self._enc.encrypt(self._pt(a))

    def decrypt_big(self, ct: Ciphertexts) -> np.ndarray:
        if self._dec is None:
            raise SecretKeyRequiredError("this backend holds only the public key")
        return np.asarray(self._dec.decrypt(ct).to_numpy(self._big), dtype=object)

    def serialize(self, ct: Ciphertexts) -> bytes:
        return bytes(ct.serialize())

    def deserialize(self, data: bytes) -> Ciphertexts:
        _, hnp = _heu()
        return hnp.CiphertextArray.load_from(data)

    # --- shape ----------------------------------------------------------------------------------------------
    def shape(self, ct: Ciphertexts) -> tuple[int, ...]:
        return (ct.rows,) if ct.ndim == 1 else (ct.rows, ct.cols)

    def slice_rows(self, ct: Ciphertexts, start: int, stop: int) -> Ciphertexts:
        return ct[int(start) : int(stop)]

    def take_rows(self, ct: Ciphertexts, rows: np.ndarray | Sequence[int]) -> Ciphertexts:
        return ct[[int(i) for i in np.asarray(rows).ravel()]]  # HEU wants Python ints

    # --- element-wise ---------------------------------------------------------------------------------------
    def add(self, a: Ciphertexts, b: Ciphertexts) -> Ciphertexts:
        return self._ev.add(a, b)

    def sub(self, a: Ciphertexts, b: Ciphertexts) -> Ciphertexts:
        return self._ev.sub(a, b)

    def add_plain(self, a: Ciphertexts, p: np.ndarray | int) -> Ciphertexts:
        return self._ev.add(a, self._pt(p, a.ndim))

    def mul_plain(self, a: Ciphertexts, p: np.ndarray | int) -> Ciphertexts:
        return self._ev.mul(a, self._pt(p, a.ndim))

    # --- reductions -----------------------------------------------------------------------------------------
    def _colsum(self, ct: Ciphertexts) -> Ciphertexts:
        """(n,)/(n, k) -> (1, k) with additions only (a one-bin bucket sum)."""
        n = ct.rows
        return self._ev.feature_wise_bucket_sum(
            ct, np.ones((1, n), np.int8), np.zeros((n, 1), np.int8), 1, False
        )

    def sum(self, ct: Ciphertexts, axis: int | None = None) -> Ciphertexts:
        if axis == 0:
            return self._colsum(ct)
        if axis == 1:
            if ct.ndim != 2:
                raise ValueError("axis=1 needs a 2-D array")
            return self._colsum(ct.transpose()).transpose()
        if axis is None:
            s = self._colsum(ct)
            return s if s.cols == 1 else self._colsum(s.transpose())
        raise ValueError(f"axis must be 0, 1 or None, got {axis}")

    def bucket_sum(
        self,
        ct: Ciphertexts,
        order: np.ndarray,
        n_bins: int,
        rows: np.ndarray | None = None,
        cumsum: bool = False,
    ) -> Ciphertexts:
        n = ct.rows
        return self._ev.feature_wise_bucket_sum(
            ct, _rows_mask(rows, n), _check_order(order, n, n_bins), int(n_bins), bool(cumsum)
        )

    def batch_bucket_sum(
        self,
        ct: Ciphertexts,
        order: np.ndarray,
        n_bins: int,
        rows_list: Sequence[np.ndarray],
        cumsum: bool = False,
    ) -> list[Ciphertexts]:
        n = ct.rows
        masks = [_rows_mask(r, n) for r in rows_list]
        return list(
            self._ev.batch_feature_wise_bucket_sum(
                ct, masks, _check_order(order, n, n_bins), int(n_bins), bool(cumsum)
            )
        )

    # --- plaintext matrix products --------------------------------------------------------------------------
    def rmatmul_plain(self, ct: Ciphertexts, p: np.ndarray) -> Ciphertexts:
        return self._ev.matmul(ct, self._pt(p))

    def matmul_plain(self, p: np.ndarray, ct: Ciphertexts, method: str = "auto") -> Ciphertexts:
        """``p @ ct``; ``method`` is ``"bucket"`` (additions only), ``"heu"`` (``ev.matmul``) or ``"auto"``.

        Bucket method (Pippenger-style multi-scalar multiplication): for output row ``j``,
        ``sum_i p[j, i] * c_i = sum_v v * (sum of c_i with p[j, i] == v)``. Each 7-bit chunk of ``p`` is one
        native ``feature_wise_bucket_sum`` with bins in reverse order and ``cumsum``; summing the prefix sums of
        bins ``0..B-2`` gives ``sum_v v * bucket_v`` with additions only. Cost: ``n * m`` ciphertext additions
        per chunk instead of ``n * m`` exponentiations: X 30000x23, 1024-bit key, 7-bit X: 2.1 vs 43 CPU-s,
        mixed-sign 2^-10 fixed point: 4.2 vs 217 CPU-s; it wins from ~32 rows on. Negative entries are shifted per row of ``p`` and corrected with
        ``min * column_sum`` (m exponentiations). Result is exactly ``p @ ct``.
        """
        x = np.asarray(p)
        if x.ndim != 2:
            raise ValueError("p must be a 2-D integer matrix")
        if x.dtype.kind not in "iub":
            raise TypeError("p must be integers (encode with encode_fixed)")
        x = x.T.astype(np.int64, copy=False)  # (n, m): one "feature" per output row
        n, m = x.shape
        if ct.rows != n:
            raise ValueError(f"shape mismatch: p has {n} columns, ct has {ct.rows} rows")
        if method == "auto":
            method = "bucket" if n >= 32 else "heu"  # bucket wins from ~32 rows (measured)
        if method == "heu":
            return self._ev.matmul(self._pt(x.T), ct)
        if method != "bucket":
            raise ValueError(f"unknown method {method!r}")
        out = self._matmul_bucket(x, ct)
        return out[:, 0] if ct.ndim == 1 else out  # numpy semantics for a 1-D vector

    def _matmul_bucket(self, x: np.ndarray, ct: Ciphertexts) -> Ciphertexts:
        n, m = x.shape
        lo = x.min(axis=0) if n else np.zeros(m, np.int64)
        shift = np.minimum(lo, 0)  # only shift columns that have negative entries
        xs = x - shift if shift.any() else x
        top = int(xs.max()) if xs.size else 0
        n_chunks = max(1, -(-top.bit_length() // _CHUNK_BITS))
        ones = np.ones((1, n), np.int8)
        out = None
        for c in range(n_chunks):
            v = (xs >> (_CHUNK_BITS * c)) & (MAX_BINS - 1)
            nb = int(v.max()) + 1 if v.size else 1
            if nb == 1:
                continue  # chunk is all zero
            order = np.ascontiguousarray((nb - 1 - v).astype(np.int8))
            pref = self._ev.feature_wise_bucket_sum(ct, ones, order, nb, True)  # (nb*m, k)
            part = self._group_rows(pref, m, nb)  # (m, k): sum of prefix rows 0..nb-2 per block
            if c:
                part = self._ev.mul(part, self._pt(np.full((1, 1), 1 << (_CHUNK_BITS * c), dtype=object)))
            out = part if out is None else self._ev.add(out, part)
        if shift.any():
            corr = self._ev.matmul(self._pt(shift.reshape(m, 1)), self._colsum(ct))  # (m,1) @ (1,k)
            out = corr if out is None else self._ev.add(out, corr)
        if out is None:  # p is all zeros: an encryption of zeros of the right shape
            k = 1 if ct.ndim == 1 else ct.cols
            out = self._enc.encrypt(self._pt(np.zeros((m, k), np.int64)))
        return out

    def _group_rows(self, pref: Ciphertexts, m: int, nb: int) -> Ciphertexts:
        """Sum rows ``j*nb + t`` for ``t < nb-1`` into row ``j`` (keeps columns), additions only."""
        rows = m * nb
        t = np.arange(rows) % nb
        mask = (t < nb - 1).astype(np.int8).reshape(1, rows)
        j = np.arange(rows) // nb
        if m <= MAX_BINS:
            return self._ev.feature_wise_bucket_sum(pref, mask, j.astype(np.int8).reshape(rows, 1), m, False)
        # more than 128 output rows: one bin-map column per group of 127, bin 127 collects other groups' rows
        n_groups = -(-m // (MAX_BINS - 1))
        order = np.full((rows, n_groups), MAX_BINS - 1, dtype=np.int8)
        g = j // (MAX_BINS - 1)
        order[np.arange(rows), g] = (j % (MAX_BINS - 1)).astype(np.int8)
        wide = self._ev.feature_wise_bucket_sum(pref, mask, order, MAX_BINS, False)  # (128*n_groups, k)
        keep = [int((jj // (MAX_BINS - 1)) * MAX_BINS + jj % (MAX_BINS - 1)) for jj in range(m)]
        return wide[keep]
