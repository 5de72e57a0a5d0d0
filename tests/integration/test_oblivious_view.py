"""Oblivious SS-GBDT: a party that keeps everything opened to it learns no split and no path.

Each party is played as an attacker in real runs (parties and dealer as processes). In
training and scoring it keeps every arithmetic value opened to it (its own contribution plus
the others', for every opening and every broadcast it receives) and the length of every
message it receives. Its attack: a value opened under a fresh one-time pad is a uniform ring
element, small in magnitude (below 2^32) with probability 2^-31, so every small opened
value is a revealed plaintext. In the default mode the attack finds the revealed split owners,
different for two datasets whose trees differ (the positive control). In the oblivious mode it
finds nothing but the bank's own scores; the two datasets (every split the bank's, every split
the provider's) give message sequences of the same lengths; the opened values look uniform.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpc_fl.models.gbdt import NO_SPLIT, GBDTParams, PlainGBDT
from mpc_fl.protocols.base import LocalData
from mpc_fl.runtime.local import run_local
from tests.budget import budget_s

SMALL = 2**32
PARAMS = GBDTParams(n_trees=2, max_depth=2, n_bins=8)
PHASES = ("training", "scoring")
N, N_TEST = 300, 40


def _datasets() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Same shapes; in "bank" only the bank's features matter, in "provider" only the provider's."""
    gen = np.random.default_rng(5)
    Xb, Xp = gen.normal(size=(N + N_TEST, 3)), gen.normal(size=(N + N_TEST, 3))
    noise = gen.logistic(size=N + N_TEST)
    out = {}
    for name, X in (("bank", Xb), ("provider", Xp)):
        y = (3 * X[:, 0] - 2 * X[:, 1] + noise > 0).astype(np.int64)
        out[name] = (Xb, Xp, y)
    return out


def _owners(Xb: np.ndarray, Xp: np.ndarray, y: np.ndarray) -> list[list[int]]:
    plain = PlainGBDT(PARAMS).fit(np.hstack([Xb, Xp])[:N], y[:N])
    return [[NO_SPLIT if f == NO_SPLIT else int(f >= 3) for f in t.feature] for t in plain.trees_]


def _install_recorder(monkeypatch) -> dict:  # noqa: ANN001
    """Patch the transport so each (forked) party keeps what is opened to it and every message length."""
    from mpc_fl.runtime import crypten_comm
    from mpc_fl.runtime.crypten_comm import MeshCommunicator

    seen: dict = {"opened": [], "lengths": []}
    original = {
        name: getattr(MeshCommunicator, name) for name in ("all_reduce", "reduce", "broadcast", "_recv_bytes")
    }

    def phase(comm) -> str | None:  # noqa: ANN001
        name = comm.mesh.ledger.phase_name
        return name if name in PHASES else None

    def keep(comm, out, batched: bool) -> None:  # noqa: ANN001
        if out is not None and phase(comm):
            for t in out if batched else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.int64:
                    seen["opened"].append((phase(comm), t.clone().reshape(-1)))

    def all_reduce(self, input, op=crypten_comm._SUM, batched=False):  # noqa: A002, ANN001, ANN202
        out = original["all_reduce"](self, input, op, batched)
        if op == crypten_comm._SUM:  # arithmetic openings (XOR ones open single masked bits)
            keep(self, out, batched)
        return out

    def reduce(self, input, dst, op=crypten_comm._SUM, batched=False):  # noqa: A002, ANN001, ANN202
        out = original["reduce"](self, input, dst, op, batched)
        if op == crypten_comm._SUM:
            keep(self, out, batched)
        return out

    def broadcast(self, input, src, group=None, batched=False):  # noqa: A002, ANN001, ANN202
        out = original["broadcast"](self, input, src, group, batched)
        if self.rank != src and group in (None, self.main_group):
            keep(self, out, batched)
        return out

    def recv_bytes(self, src, group, expect=None):  # noqa: ANN001, ANN202
        data = original["_recv_bytes"](self, src, group, expect)
        if phase(self):
            seen["lengths"].append(len(data))
        return data

    for name, fn in (("all_reduce", all_reduce), ("reduce", reduce), ("broadcast", broadcast)):
        monkeypatch.setattr(MeshCommunicator, name, fn)
    monkeypatch.setattr(MeshCommunicator, "_recv_bytes", recv_bytes)
    return seen


def _run(monkeypatch, data: tuple, oblivious: bool) -> dict:  # noqa: ANN001
    from mpc_fl.protocols.ss_gbdt import SecretSharedGBDT

    Xb, Xp, y = data
    seen = _install_recorder(monkeypatch)

    def fn(session):  # noqa: ANN001, ANN202
        X = Xb if session.role == "bank" else Xp
        proto = SecretSharedGBDT(PARAMS, oblivious=oblivious)
        proto.fit(session, LocalData(X[:N], y[:N] if session.role == "bank" else None))
        proto.decision_function(session, LocalData(X[N:]))
        return {
            "small": {
                ph: torch.cat(
                    [t[t.abs() < SMALL] for p, t in seen["opened"] if p == ph] or [torch.zeros(0)]
                ).numpy()
                for ph in PHASES
            },
            "top_bit": [float((t < 0).double().mean()) for p, t in seen["opened"] if p == "training"],
            "sizes": [t.numel() for p, t in seen["opened"] if p == "training"],
            "lengths": list(seen["lengths"]),
        }

    return run_local(fn, timeout_s=budget_s(60))


@pytest.fixture(scope="module")
def datasets() -> dict:
    data = _datasets()
    owners = {name: _owners(*d) for name, d in data.items()}
    assert owners["bank"] != owners["provider"]  # the trees differ: there is something to find
    assert {o for t in owners["bank"] for o in t} == {0} and 1 in {o for t in owners["provider"] for o in t}
    return data


def test_positive_control_the_attack_finds_the_owners_in_the_default_mode(monkeypatch, datasets):
    views = {name: _run(monkeypatch, d, oblivious=False) for name, d in datasets.items()}
    for role in ("bank", "provider"):
        a, b = (views[name][role]["result"]["small"]["training"] for name in ("bank", "provider"))
        assert a.size and b.size  # revealed plaintexts
        assert not np.array_equal(a, b)  # and they tell the two datasets apart


def test_the_attack_finds_nothing_in_the_oblivious_mode(monkeypatch, datasets):
    views = {name: _run(monkeypatch, d, oblivious=True) for name, d in datasets.items()}
    for name in datasets:
        for role in ("bank", "provider"):
            r = views[name][role]["result"]
            assert r["small"]["training"].size == 0, (name, role)
            # uniform openings: the top bit of all training openings together is set half the time
            n = sum(r["sizes"])
            frac = sum(f * s for f, s in zip(r["top_bit"], r["sizes"], strict=True)) / n
            assert abs(frac - 0.5) < 5 * 0.5 / np.sqrt(n), (name, role, frac)
        # scoring: the provider learns nothing, the bank only its scores (one value per test row)
        assert views[name]["provider"]["result"]["small"]["scoring"].size == 0
        assert views[name]["bank"]["result"]["small"]["scoring"].size == N_TEST
    for role in ("bank", "provider"):  # the schedule does not depend on the trees
        assert views["bank"][role]["result"]["lengths"] == views["provider"][role]["result"]["lengths"]


def test_default_mode_routing_sends_only_padded_shares_and_bits(monkeypatch, datasets):
    """Default mode routes rows with the owner's private bits: the owner receives the other party's
    shares under one-time pads (never a small value), the other party the owner's bits under
    one-time pads (balanced), in training and in the margin update."""
    from mpc_fl.crypto import private_bits

    def _record(name: str):  # noqa: ANN202
        original = getattr(private_bits, name)

        def spy(data, shape):  # noqa: ANN001, ANN202
            out = original(data, shape)
            _received.append((name, np.asarray(out).reshape(-1).copy()))
            return out

        monkeypatch.setattr(private_bits, name, spy)

    _received: list = []
    _record("_words")
    _record("_unpack")

    def fn(session):  # noqa: ANN001, ANN202
        from mpc_fl.protocols.ss_gbdt import SecretSharedGBDT

        Xb, Xp, y = datasets["provider"]  # both parties own splits here
        X = Xb if session.role == "bank" else Xp
        SecretSharedGBDT(PARAMS).fit(session, LocalData(X[:N], y[:N] if session.role == "bank" else None))
        words = [v for k, v in _received if k == "_words"]
        bits = [v for k, v in _received if k == "_unpack"]
        return {
            "words": np.concatenate(words) if words else np.zeros(0, np.int64),
            "bits": np.concatenate(bits) if bits else np.zeros(0, bool),
        }

    out = run_local(fn, timeout_s=budget_s(60))
    received_words = sum(out[r]["result"]["words"].size for r in out)
    assert received_words > 0  # the provider owns splits, so somebody receives masked shares
    for role in ("bank", "provider"):
        r = out[role]["result"]
        assert not (np.abs(r["words"].astype(np.float64)) < SMALL).any(), role
        if r["bits"].size:
            assert abs(r["bits"].mean() - 0.5) < 5 * 0.5 / np.sqrt(r["bits"].size), role
