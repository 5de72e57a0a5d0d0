"""Fixtures shared by the Paillier protocol tests: the test-only short-key override and a ciphertext spy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from mpc_fl.crypto.paillier import Ciphertexts, HeuBackend, allow_short_keys_for_tests
from mpc_fl.runtime.channel import LocalChannel


@pytest.fixture()
def short_keys() -> Iterator[None]:
    """1024-bit keys keep the protocol tests fast; real runs refuse them (MIN_KEY_BITS = 2048)."""
    with allow_short_keys_for_tests():
        yield


def _is_npz_or_json(blob: bytes) -> bool:
    if blob.startswith(b"PK\x03\x04"):  # np.savez (send_arrays)
        return True
    try:
        json.loads(blob.decode())
    except (UnicodeDecodeError, ValueError):
        return False
    return True


@dataclass
class CiphertextSpy:
    """What each party sent, and every ``rerandomize`` call as (deterministic input, output) bytes."""

    sent: dict[str, list[bytes]] = field(default_factory=dict)
    rerandomized: list[tuple[bytes, bytes]] = field(default_factory=list)

    def ciphertexts_sent_by(self, role: str) -> list[bytes]:
        """The blobs ``role`` sent that are neither arrays nor JSON: its ciphertexts (and public keys)."""
        return [b for b in self.sent.get(role, []) if not _is_npz_or_json(b)]

    def assert_all_rerandomized(self, role: str, expected: int) -> None:
        """Every ciphertext ``role`` sent is a fresh ``rerandomize`` output, never the deterministic result."""
        sent = self.ciphertexts_sent_by(role)
        assert len(sent) == expected == len(self.rerandomized)
        assert sent == [out for _, out in self.rerandomized]
        assert all(pre != out for pre, out in self.rerandomized)
        assert not {pre for pre, _ in self.rerandomized} & set(self.sent[role])


@pytest.fixture()
def ciphertext_spy(monkeypatch: pytest.MonkeyPatch) -> CiphertextSpy:
    """Record channel traffic and re-randomisations (the parties are threads of this process)."""
    spy = CiphertextSpy()
    send, rerandomize = LocalChannel.send_bytes, HeuBackend.rerandomize

    def spy_send(self: LocalChannel, to: str, data: bytes, **kw: object) -> None:
        spy.sent.setdefault(self.role, []).append(bytes(data))
        send(self, to, data, **kw)

    def spy_rerandomize(self: HeuBackend, ct: Ciphertexts) -> Ciphertexts:
        out = rerandomize(self, ct)
        spy.rerandomized.append((self.serialize(ct), self.serialize(out)))
        return out

    monkeypatch.setattr(LocalChannel, "send_bytes", spy_send)
    monkeypatch.setattr(HeuBackend, "rerandomize", spy_rerandomize)
    return spy
