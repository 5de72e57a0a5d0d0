"""Attack on OT-PSI: the peer records everything it receives and looks for our input's fingerprint.

Claim (mpc_fl/psi/ot.py): a party learns only the peer's set size and the intersection. A value
that depends on the peer's whole set and nothing secret (such as a hash of it) would break
that: it confirms a guess of the entire customer list. The attacker runs several PSIs with the
victim: the victim holding set A (three times) and set B (twice), all of the same size and id
format, the attacker's own input fixed. Any random-looking value (a length-delimited field of the
library's protobuf messages) the attacker received in every run on A and in no run on B is a
fingerprint of A. The library sends exactly such a hash
unless the decoy key is added, so the same attack run without the decoy must find it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import mpc_fl.psi.ot as ot
from mpc_fl.runtime.local import run_local
from tests.budget import budget_s


def _received_by_provider(bank_ids: np.ndarray, provider_ids: np.ndarray) -> bytes:
    """Every byte the provider's process receives from the bank in one OT-PSI (parties as processes)."""

    def fn(session):  # noqa: ANN001, ANN202
        got: list[bytes] = []
        if session.role == "provider":
            inner = session.channel._recv

            def spy(frm: str, *args) -> bytes:  # noqa: ANN002
                data = inner(frm, *args)
                got.append(data)
                return data

            session.channel._recv = spy
        mine = bank_ids if session.role == "bank" else provider_ids
        ot.run_ot_psi(session.channel, mine, "provider" if session.role == "bank" else "bank")
        return b"".join(got)

    return run_local(fn, uses_crypten=False, dealer=False, timeout_s=budget_s(5, processes=2))["provider"][
        "result"
    ]


def _high_entropy_windows(stream: bytes) -> set[bytes]:
    """Random-looking byte strings the peer received as whole values: length-delimited fields.

    The library's messages are protobuf, so every value it sends (a hash, a seed, a block of
    OT or VOLE output) travels as ``tag | length | bytes``. We take every field of 16 to 64
    bytes that looks random (at least 3/4 distinct bytes, at most 3/4 printable); a
    fingerprint of our set would be one of them. Why not every window of the raw stream: RPC
    framing (counters, names) also repeats across runs by chance, and whole values do not; and
    why the printable bound: a tag-like byte inside the library's message names (e.g.
    ``mpc_fl-psi-read:P2P-...``) can frame a piece of that text, whose counter varies by run.
    """
    out = set()
    for length in range(16, 65):
        for m in re.finditer(rb"[\x0a\x12\x1a\x22\x2a\x32\x3a\x42]" + re.escape(bytes([length])), stream):
            value = stream[m.end() : m.end() + length]
            text = sum(32 <= c < 127 for c in value)  # random bytes: 37% printable
            if len(value) == length and len(set(value)) >= 3 * length // 4 and text <= 3 * length // 4:
                out.add(value)
    return out


def _fingerprints(n_bank: int, n_provider: int) -> set[bytes]:
    base = 10**7  # every id has 8 digits, so the two sets differ in content only
    provider = np.arange(n_provider) + base
    set_a = np.concatenate([np.arange(n_bank // 2) + base, np.arange(n_bank - n_bank // 2) + base + 10**6])
    set_b = np.concatenate(
        [np.arange(n_bank // 2) + base, np.arange(n_bank - n_bank // 2) + base + 2 * 10**6]
    )
    runs_a = [_high_entropy_windows(_received_by_provider(set_a, provider)) for _ in range(3)]
    runs_b = [_high_entropy_windows(_received_by_provider(set_b, provider)) for _ in range(2)]
    return set.intersection(*runs_a) - set.union(*runs_b)


@pytest.mark.parametrize(
    "n_bank,n_provider", [(1500, 1500), (3000, 1000)], ids=["bank-receives", "bank-sends"]
)
def test_peer_finds_no_fingerprint_of_our_set(n_bank, n_provider):
    assert ot.CONCEAL_INPUT_DIGEST
    assert _fingerprints(n_bank, n_provider) == set()


def test_attack_finds_the_library_digest_without_the_decoy(monkeypatch):
    monkeypatch.setattr(ot, "CONCEAL_INPUT_DIGEST", False)
    found = _fingerprints(1500, 1500)
    assert found  # the library's 32-byte set hash
