"""ECDH private set intersection: commutative blinding in the prime-order group of edwards25519.

Why: before joint training the bank and the logistics platform must find their common
customers without showing each other the customers they do not share.

Protocol (both parties call :func:`run_psi` with the same code; A holds X, B holds Y)
------------------------------------------------------------------------------------
G is the prime-order subgroup (order l = 2^252 + 27742317777372353535851937790883648493) of
edwards25519; H maps an id to G (below). A draws a secret a, B a secret b, uniform in Z_l^*,
fresh for every run.

0. Both send a header: protocol tag, set size, batch size.
1. A sends a*H(x) for every x in X, in a fresh uniformly random order; B sends b*H(y) likewise.
2. A returns b*H(y) -> a*b*H(y) in the order B sent them; B returns b*a*H(x) in A's order.
3. A now has a*b*H(x) for each of its own rows (it knows its shuffle) and a*b*H(y) for every y
   of B (computed in step 2); its common rows are those whose value is among B's. B likewise.
   Both sort the common rows by the 32-byte encoding of a*b*H(id), so both get the same row
   order (the "aligned order") without any id being sent.

Steps 1 and 2 run in batches of ``batch_size`` points, interleaved (batch k of step 1, then
batch k of step 2), so messages and memory per message stay bounded and both parties compute
at the same time. In every exchange the party whose role name sorts first sends first and the
other receives first, so the protocol cannot deadlock even on a transport whose send blocks
until the peer receives.

Hash to the group: SHA-512(DST || utf-8(str(id))) gives 64 bytes; each half is mapped by
libsodium's ``crypto_core_ed25519_from_uniform`` (Elligator 2, then cofactor clearing, so the
point lies in G) and the two points are added. This is the two-map random-oracle shape of
RFC 9380 ``hash_to_curve`` (the one libsodium's ``crypto_core_ed25519_from_hash`` uses, which
PyNaCl does not expose), not the single-map ``encode_to_curve`` whose output is far from
uniform. It is not byte-compatible with the RFC 9380 edwards25519 suites; both parties only
need to agree with each other.

Threat model and what each party learns
---------------------------------------
Semi-honest (honest-but-curious) parties who follow the protocol; DDH hard in G; H modelled
as a random oracle; secrets and the shuffle drawn from the OS CSPRNG. Under these
assumptions each party learns exactly:

* ``n_peer``, the size of the peer's set (the number of points and messages shows it);
* the intersection, as positions in its own id list (hence also its size);
* the aligned order of the common rows: a uniformly random permutation of them, shared by
  both parties and independent of either party's input order.

Nothing else: every other value it sees is b*H(y) or a*b*H(y) for an unknown y, which is
pseudorandom under DDH, and it sees them in the peer's random order, so positions tell
nothing about the peer's row order (even for common ids, whose place in the shuffled stream
is uniform). Received points are checked to be in G (libsodium rejects others), so a faulty
peer cannot push our key into a small subgroup.

Not covered: a malicious party. It can, e.g., use another key in step 2 and make the other
side's output wrong, or stop once it has its own output (no fairness). No PSI stops a party
from choosing its input set (e.g. probing for one customer), and what the later training
reveals is outside this module.

Ids are compared as ``str(id)``: 7, ``np.int64(7)`` and "7" are the same id; 7.0 and b"7"
are not. Both parties must format their ids the same way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from mpc_fl.psi.barrier import end_of_alignment
from mpc_fl.runtime.channel import Channel

PROTOCOL = "mpc_fl/psi/ecdh/v1"
PHASE = "alignment"
POINT_BYTES = 32
#: Domain-separation tag, so these hashes cannot collide with any other use of SHA-512 on ids.
DST = b"mpc_fl/psi/ecdh/v1:edwards25519_SHA-512_ELL2x2:"

__all__ = ["PSIResult", "run_psi", "canonical_ids", "hash_to_group", "blind"]


@dataclass(frozen=True)
class PSIResult:
    """One party's output of the PSI.

    ``indices``: int64 positions into this party's own id array, in the aligned order agreed by
    both parties (so ``ids_a[res_a.indices]`` and ``ids_b[res_b.indices]`` are the same ids,
    row for row). ``n_self``/``n_peer``: sizes of the two input sets.
    """

    indices: np.ndarray
    n_self: int
    n_peer: int


def canonical_ids(ids: Sequence | np.ndarray) -> list[bytes]:
    """Encode ids as utf-8 of ``str(id)``; reject empty lists and duplicates.

    Why reject duplicates: PSI is over sets; with a repeated id the rows to align are ambiguous.
    """
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a sequence of ids, not a single str/bytes")
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"ids must be one-dimensional, got shape {ids.shape}")
        items = ids.tolist()  # Python scalars: far faster to str() than numpy scalars
    else:
        items = list(ids)
    keys = [str(x).encode() for x in items]
    if not keys:
        raise ValueError("empty id list: there is nothing to intersect")
    if len(set(keys)) != len(keys):
        seen: set[bytes] = set()
        for k in keys:
            if k in seen:
                raise ValueError(
                    f"duplicate id {k.decode()!r} (ids are compared as str(id)): PSI needs a set, deduplicate"
                )
            seen.add(k)
    return keys


def hash_to_group(keys: Sequence[bytes]) -> list[bytes]:
    """H(id): 32-byte encodings of points of the prime-order subgroup (see module docstring)."""
    sha512 = hashlib.sha512
    from_uniform = sodium.crypto_core_ed25519_from_uniform
    add = sodium.crypto_core_ed25519_add
    digests = [sha512(DST + k).digest() for k in keys]
    return [add(from_uniform(h[:32]), from_uniform(h[32:])) for h in digests]


def blind(secret: bytes, points: Sequence[bytes]) -> list[bytes]:
    """Multiply each point by ``secret``; raise ValueError if one is not in the prime-order group.

    libsodium's scalar multiplication refuses non-canonical encodings, small-order points and
    points outside the main subgroup, so this also validates what a peer sent.
    """
    mul = sodium.crypto_scalarmult_ed25519_noclamp
    try:
        return [mul(secret, p) for p in points]
    except CryptoError:
        raise ValueError("peer sent a point that is not in the prime-order group of edwards25519") from None


def _random_scalar() -> bytes:
    """Uniform nonzero scalar mod l (64 random bytes reduced mod l: statistical bias about 2^-260)."""
    while True:
        s = sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64))
        if any(s):
            return s


def _random_permutation(n: int) -> np.ndarray:
    """Uniform permutation from the OS CSPRNG (sort by random 64-bit keys).

    Why not a seeded numpy generator: the peer learns where the common ids sit in our shuffled
    stream, so the shuffle must not let anyone infer our input row order from that.
    """
    keys = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable")


def _to_array(points: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(points), dtype=np.uint8).reshape(-1, POINT_BYTES)


def _from_message(msg: dict[str, np.ndarray], expect: int) -> list[bytes]:
    arr = msg.get("points")
    if set(msg) != {"points"} or arr is None or arr.dtype != np.uint8 or arr.shape != (expect, POINT_BYTES):
        shape = None if arr is None else (arr.dtype, arr.shape)
        raise ValueError(f"malformed PSI message: expected uint8 ({expect}, {POINT_BYTES}), got {shape}")
    buf = arr.tobytes()
    return [buf[i : i + POINT_BYTES] for i in range(0, len(buf), POINT_BYTES)]


def _batch_len(k: int, n: int, batch_size: int) -> int:
    return max(0, min(batch_size, n - k * batch_size))


def _swap(channel: Channel, peer: str, first: bool, payload: list[bytes] | None, expect: int) -> list[bytes]:
    """Send ``payload`` (if any) and receive ``expect`` points (if > 0), in role order."""
    got: list[bytes] = []
    if first and payload is not None:
        channel.send_arrays(peer, points=_to_array(payload))
    if expect:
        got = _from_message(channel.recv_arrays(peer), expect)
    if not first and payload is not None:
        channel.send_arrays(peer, points=_to_array(payload))
    return got


def _swap_header(channel: Channel, peer: str, header: dict) -> dict:
    got = channel.exchange_json(peer, header)
    if not isinstance(got, dict) or got.get("protocol") != PROTOCOL:
        raise ValueError(f"peer {peer!r} does not speak {PROTOCOL}: header {got!r}")
    for field in ("n", "batch_size"):
        v = got.get(field)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"peer {peer!r} sent an invalid {field!r}: {v!r}")
    return got


def run_psi(
    channel: Channel,
    ids: Sequence | np.ndarray,
    peer: str,
    *,
    batch_size: int = 65536,
    progress: bool = False,
) -> PSIResult:
    """Intersect ``ids`` with the peer's ids; both parties call this symmetrically.

    Traffic is counted by the channel's ledger under phase ``"alignment"``: per party one JSON
    header plus 32 bytes per own point (step 1) and per peer point (step 2), plus npz framing.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch_size = int(batch_size)  # numpy ints are not JSON-serialisable
    keys = canonical_ids(ids)  # validate before talking to the peer
    n = len(keys)
    secret = _random_scalar()
    perm = _random_permutation(n)  # position j of what we send holds our row perm[j]
    first = channel.role < peer

    with channel.phase(PHASE):
        header = {"protocol": PROTOCOL, "n": n, "batch_size": batch_size}
        got = _swap_header(channel, peer, header)
        n_peer, peer_bs = got["n"], got["batch_size"]
        n_steps = max(-(-n // batch_size), -(-n_peer // peer_bs))

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n + n_peer, unit="pt", desc=f"ECDH-PSI {channel.role}")
        own_double: list[bytes] = []  # a*b*H(x) in our sent (shuffled) order
        peer_double: set[bytes] = set()  # a*b*H(y) for all the peer's y
        try:
            for k in range(n_steps):
                rows = perm[k * batch_size : (k + 1) * batch_size].tolist()
                mine = blind(secret, hash_to_group([keys[i] for i in rows])) if rows else None
                theirs = _swap(channel, peer, first, mine, _batch_len(k, n_peer, peer_bs))
                back = blind(secret, theirs) if theirs else None
                if back:
                    peer_double.update(back)
                own_double.extend(_swap(channel, peer, first, back, len(rows)))
                if bar is not None:
                    bar.update(len(rows) + len(theirs))
        finally:
            if bar is not None:
                bar.close()

    perm_list = perm.tolist()
    common = sorted((v, perm_list[j]) for j, v in enumerate(own_double) if v in peer_double)
    indices = np.fromiter((row for _, row in common), dtype=np.int64, count=len(common))
    with channel.phase(PHASE):
        end_of_alignment(channel, peer, [keys[i] for i in indices])
    return PSIResult(indices=indices, n_self=n, n_peer=n_peer)
