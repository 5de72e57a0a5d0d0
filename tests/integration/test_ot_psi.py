"""Attack on OT-PSI: the peer records everything it receives and looks for our input's fingerprint.

Claim (mpc_fl/psi/ot.py): a party learns only the peer's set size and the intersection. A value
that depends on the peer's whole set and nothing secret (such as a hash of it) would break
that: it confirms a guess of the entire customer list. The attacker runs several PSIs with the
victim: the victim holding set A (three times) and set B (twice), all of the same size and id
format, the attacker's own input fixed. Any random-looking 16-byte string the attacker received
in every run on A and in no run on B is a fingerprint of A. The library sends exactly such a hash
unless the decoy key is added, so the same attack run without the decoy must find it.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mpc_fl.psi.ot as ot
from mpc_fl.runtime.channel import LocalChannel

ROLES = ("bank", "provider")
WINDOW = 16
_TEXT = re.compile(rb"[ -~]{4}")


def run_pair(ids_bank, ids_provider, chans) -> None:
    with ThreadPoolExecutor(2) as ex:
        fb = ex.submit(ot.run_ot_psi, chans["bank"], ids_bank, "provider")
        fp = ex.submit(ot.run_ot_psi, chans["provider"], ids_provider, "bank")
        fb.result(timeout=120), fp.result(timeout=120)


def _received_by_provider(bank_ids: np.ndarray, provider_ids: np.ndarray) -> bytes:
    chans = LocalChannel.create(ROLES)
    got: list[bytes] = []
    inner = chans["provider"]._recv

    def spy(frm: str) -> bytes:
        data = inner(frm)
        got.append(data)
        return data

    chans["provider"]._recv = spy  # type: ignore[method-assign]
    run_pair(bank_ids, provider_ids, chans)
    return b"".join(got)


def _high_entropy_windows(stream: bytes) -> set[bytes]:
    """16-byte windows that look random: >= 14 distinct bytes, no 4 printable characters in a row.

    Why the filter: the library's RPC framing (message names, padded counters, lengths) also
    repeats by chance across runs; random bytes, such as a hash, do not. Most 16-byte windows
    of a random 32-byte value pass the filter (random bytes: 15.5 distinct, 4 printable in a
    row in about 1 window of 5).
    """
    out = set()
    for i in range(len(stream) - WINDOW + 1):
        w = stream[i : i + WINDOW]
        if len(set(w)) >= 14 and not _TEXT.search(w):
            out.add(w)
    return out


def _fingerprints(n_bank: int, n_provider: int) -> set[bytes]:
    base = 10**7  # every id has 8 digits, so the two sets differ in content only
    provider = np.arange(n_provider) + base
    set_a = np.concatenate([np.arange(n_bank // 2) + base, np.arange(n_bank - n_bank // 2) + base + 10**6])
    set_b = np.concatenate([np.arange(n_bank // 2) + base, np.arange(n_bank - n_bank // 2) + base + 2 * 10**6])
    runs_a = [_high_entropy_windows(_received_by_provider(set_a, provider)) for _ in range(3)]
    runs_b = [_high_entropy_windows(_received_by_provider(set_b, provider)) for _ in range(2)]
    return set.intersection(*runs_a) - set.union(*runs_b)


@pytest.mark.parametrize("n_bank,n_provider", [(1500, 1500), (3000, 1000)], ids=["bank-receives", "bank-sends"])
def test_peer_finds_no_fingerprint_of_our_set(n_bank, n_provider):
    assert ot.CONCEAL_INPUT_DIGEST
    assert _fingerprints(n_bank, n_provider) == set()


def test_attack_finds_the_library_digest_without_the_decoy(monkeypatch):
    monkeypatch.setattr(ot, "CONCEAL_INPUT_DIGEST", False)
    found = _fingerprints(1500, 1500)
    assert found  # the library's 32-byte set hash
