"""Products with one party's private bits: exact, one round, and what crosses the wire is padded."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.runtime.local import run_local
from tests.attacks import mutants
from tests.attacks.view import View, record

N, K = 300, 5
#: column owners: party 0, party 1, nobody (all ones), the last party, party 0
OWNERS = {2: [0, 1, -1, 1, 0], 3: [0, 1, -1, 2, 0]}


def _public(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test values (public to the test, not to the protocol): x (N, 3, K) and scalars, bits (N, 1, K)."""
    gen = np.random.default_rng(seed)
    x = gen.normal(size=(N, 3, K)) * 100
    scalars = gen.normal(size=(1, K))
    bits = gen.random((N, 1, K)) < 0.4
    return x, scalars, bits


def _run(session, seed: int, whole: View | None = None) -> dict:  # noqa: ANN001
    import torch

    from mpc_fl.crypto import private_bits
    from mpc_fl.crypto.secure_crypten import crypten

    rank, P = session.rank, len(session.roles)
    owners = np.array(OWNERS[P])
    x, scalars, bits = _public(seed)
    mine = bits if rank in owners else None
    seen: list[bytes] = []
    original = crypten.communicator.get().exchange

    def spy(payloads, sizes):  # noqa: ANN001, ANN202
        got = original(payloads, sizes)
        seen.extend(bytes(v) for v in got.values())
        return got

    crypten.communicator.get().exchange = spy
    ledger = session.channel.ledger
    ex = crypten.cryptensor(torch.from_numpy(x), src=0)
    es = crypten.cryptensor(torch.from_numpy(scalars), src=P - 1)
    with session.channel.phase("training"):
        full = private_bits.mul_private_bits(ex, mine, (N, 1, K), owners)
        rounds_one = ledger.by_phase["training"].rounds
        bcast = private_bits.mul_private_bits(es, None if mine is None else mine[:, 0], (N, K), owners)
    return {
        "full": full.get_plain_text().numpy(),
        "bcast": bcast.get_plain_text().numpy(),
        "rounds_one": rounds_one,
        "seen": seen,
        "view": whole.export() if whole is not None else None,
    }


@pytest.mark.parametrize("roles", [("bank", "provider"), ("bank", "provider", "provider2")])
def test_products_with_private_bits_are_exact_in_one_round(roles):
    results = run_local(lambda s: _run(s, 0), roles)
    x, scalars, bits = _public(0)
    bits = bits.copy()
    bits[..., 2] = True  # nobody owns column 2: it multiplies by ones
    for role, r in results.items():
        got = r["result"]
        np.testing.assert_allclose(got["full"], x * bits, atol=1e-3, err_msg=role)
        np.testing.assert_allclose(got["bcast"], scalars * bits[:, 0], atol=1e-3, err_msg=role)
        # one exchange; the bank also makes the dealer request (three ledger calls: ask, size, reply)
        assert got["rounds_one"] == (4 if role == "bank" else 1), (role, got["rounds_one"])


def test_what_each_party_receives_is_padded(monkeypatch):
    """The owner receives masked shares (uniform 64-bit words), the others masked bits (balanced);
    with other data the sizes are the same and the words show no relation to the data."""
    whole = record(monkeypatch)
    a = run_local(lambda s: _run(s, 0, whole))
    b = run_local(lambda s: _run(s, 1))
    for role in ("bank", "provider"):
        sa, sb = a[role]["result"]["seen"], b[role]["result"]["seen"]
        assert [len(m) for m in sa] == [len(m) for m in sb]
        blob = b"".join(sa)
        bits = np.unpackbits(np.frombuffer(blob, np.uint8))
        assert abs(bits.mean() - 0.5) < 0.02, (role, bits.mean())
    # an unmasked share of x would be a small fixed-point integer: below 2^40 in magnitude.
    # Each party owns two of the five columns, so both receive masked shares: the bank's come
    # first in its message, the provider's after the bank's masked bits of its own two columns.
    for role, offset in (("bank", 0), ("provider", -(-N * 2 // 8))):
        msg = a[role]["result"]["seen"][0]
        words = np.frombuffer(msg[offset : offset + 8 * N * 3 * 2], np.int64)
        assert (np.abs(words.astype(np.float64)) < 2.0**40).mean() < 0.01, role
    # and every pad is fresh: the two products' masked bits (equally long: N x K indicators each)
    # agree in about half their bits, no two received words are close (the products' phase: the
    # test opens the results afterwards)
    for role in ("bank", "provider"):
        found, revealed = a[role]["result"]["view"].freshness(("training",))
        assert not [f for f in found if f.flagged], (role, [str(f) for f in found])
        assert {f.name for f in found if f.pairs} == {"nearest words", "xor agreement"}, role
        assert not revealed, role


def test_positive_control_a_bit_pad_reused_in_two_products_is_flagged(monkeypatch):
    """Mutant: the dealer and the owner reuse the first product's bit pad ``c`` in the second (the
    products stay exact). The second product's masked bits then equal the first's (the same
    indicators), which the marginal check above (balanced bits) passes; the XOR test flags it."""
    whole = record(monkeypatch)
    mutants.reuse_plan_draw(monkeypatch, "private_bits", 1)  # draws: a, then c, then shares of t
    results = run_local(lambda s: _run(s, 0, whole))
    x, scalars, bits = _public(0)
    bits = bits.copy()
    bits[..., 2] = True
    for role, r in results.items():
        got = r["result"]
        np.testing.assert_allclose(got["full"], x * bits, atol=1e-3, err_msg=role)
        np.testing.assert_allclose(got["bcast"], scalars * bits[:, 0], atol=1e-3, err_msg=role)
        masked = np.unpackbits(np.frombuffer(b"".join(got["seen"]), np.uint8))
        assert abs(masked.mean() - 0.5) < 0.02, role  # marginally balanced
        found, _ = got["view"].freshness(("training",))
        assert "xor agreement" in {f.name for f in found if f.flagged}, (role, [str(f) for f in found])


def test_a_party_that_owns_columns_must_pass_its_bits():
    def bad(session):  # noqa: ANN001, ANN202
        import torch

        from mpc_fl.crypto.private_bits import mul_private_bits
        from mpc_fl.crypto.secure_crypten import crypten

        x = crypten.cryptensor(torch.zeros(4, 2), src=0)
        try:
            mul_private_bits(x, np.ones((5, 2), dtype=bool), (4, 2), np.array([0, 1]))
        except ValueError as e:
            return str(e)
        return "no error"

    out = run_local(bad, timeout_s=120)
    assert "bits of shape (5, 2), expected (4, 2)" in out["bank"]["result"]
