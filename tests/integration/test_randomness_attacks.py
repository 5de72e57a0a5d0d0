"""The review's seed-search attack (F1) recovers a matrix masked by a 32-bit-seeded stream, and finds
nothing in what a party receives from the real SS-LR and SS-GBDT runs: masks come from 256-bit keys.

A search over known weak generators (and a balanced top bit) misses a 256-bit-keyed stream that
repeats itself, so each party's whole view must also be fresh (:mod:`tests.attacks.freshness`);
the positive control is a ChaCha20 stream restarted at every draw (a reused nonce)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mpc_fl.models.gbdt import GBDTParams
from mpc_fl.models.lr import LRParams
from mpc_fl.protocols.base import LocalData
from mpc_fl.runtime.local import run_local
from tests.attacks import seed_search
from tests.attacks import view as views
from tests.budget import budget_s

#: Seeds tried per family and window: 2^16 (the review swept all 2^32 MT19937 seeds in 136 CPU-s).
WINDOW = 2**16


def _windows() -> list[range]:
    """The bottom of the 32-bit space plus a random window elsewhere in it (a different one each run)."""
    start = random.randrange(WINDOW, 2**32 - WINDOW)
    return [range(WINDOW), range(start, start + WINDOW)]


@pytest.mark.parametrize("family", list(seed_search.FAMILIES))
def test_positive_control_the_attack_recovers_a_matrix_masked_by_a_32_bit_seeded_stream(family):
    gen = np.random.default_rng(7)
    M = torch.from_numpy(np.round(gen.normal(size=(50, 4)) * 2**12).astype(np.int64))  # features at 12 bits
    seed = random.randrange(WINDOW)
    E = M - seed_search.FAMILIES[family](seed, (50, 4))
    hits = seed_search.search(E, seed_search.plausible_lr, family, range(WINDOW))
    assert hits == [seed]
    assert torch.equal(seed_search.recover(E, family, seed), M)


def _record_openings(monkeypatch_target) -> list:  # noqa: ANN001
    """Wrap FixedMaskMatrix (and its one-hot form, SS-GBDT's bin matrices) so each party keeps the
    openings E = M - A of the matrices it does not own."""
    from mpc_fl.crypto.fixed_mask import FixedMaskMatrix, OneHotMaskMatrix

    seen: list = []
    original, original_hot = FixedMaskMatrix.__init__, OneHotMaskMatrix.__init__

    def init(self, M, *, owner, shape, precision=16):  # noqa: ANN001, ANN202
        original(self, M, owner=owner, shape=shape, precision=precision)
        if self.rank != owner:
            seen.append((owner, precision, self.E.clone()))

    def init_hot(self, bins, n_bins, **kwargs):  # noqa: ANN001, ANN003, ANN202
        original_hot(self, bins, n_bins, **kwargs)
        if self.rank != self.owner:
            seen.append((self.owner, 0, self.E.clone()))

    monkeypatch_target.setattr(FixedMaskMatrix, "__init__", init)
    monkeypatch_target.setattr(OneHotMaskMatrix, "__init__", init_hot)
    return seen


def _attack_all(openings: list) -> dict:
    found = {}
    for owner, precision, E in openings:
        plausible = seed_search.plausible_indicator if precision == 0 else seed_search.plausible_lr
        for family in seed_search.FAMILIES:
            for window in _windows():
                hits = seed_search.search(E, plausible, family, window)
                if hits:
                    found[(owner, family, window.start)] = hits
    return found


def _data(n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gen = np.random.default_rng(3)
    Xb, Xp = gen.normal(size=(n, 3)), gen.normal(size=(n, 4))
    y = ((Xb[:, 0] + Xp[:, 1] + 0.5 * gen.normal(size=n)) > 0).astype(np.int64)
    return Xb, Xp, y


def _restart_every_draw(monkeypatch) -> None:  # noqa: ANN001
    """Mutant: every draw from a PRG restarts its keystream (the key and nonce reused per draw), so
    each draw repeats the stream's first bytes. The parties and the dealer draw alike, so the
    results stay exact; the forked processes inherit the patch."""
    from mpc_fl.crypto import prg

    init, fill = prg.PRG.__init__, prg.PRG.fill

    def init_keeping(self, key, stream=0):  # noqa: ANN001, ANN202
        init(self, key, stream)
        self._mutant_start = (bytes(key), stream)

    def fill_restarted(self, out):  # noqa: ANN001, ANN202
        init(self, *self._mutant_start)  # a fresh cipher at the start of the stream
        fill(self, out)

    monkeypatch.setattr(prg.PRG, "__init__", init_keeping)
    monkeypatch.setattr(prg.PRG, "fill", fill_restarted)


def _run(protocol: str, monkeypatch, mutant: bool = False) -> dict:  # noqa: ANN001
    """Each party's fixed-mask openings and its whole view of a run."""
    from mpc_fl.protocols.ss_gbdt import SecretSharedGBDT
    from mpc_fl.protocols.ss_lr import SecretSharedLR

    Xb, Xp, y = _data()
    openings = _record_openings(monkeypatch)
    whole = views.record(monkeypatch)
    if mutant:
        _restart_every_draw(monkeypatch)

    def fn(session):  # noqa: ANN001, ANN202
        proto = (
            SecretSharedLR(LRParams(n_epochs=1, batch_size=128))
            if protocol == "ss_lr"
            else SecretSharedGBDT(GBDTParams(n_trees=1, max_depth=2, n_bins=8))
        )
        X = Xb if session.role == "bank" else Xp
        proto.fit(session, LocalData(X, y if session.role == "bank" else None))
        return {"openings": [(o, p, E.numpy()) for o, p, E in openings], "view": whole.export()}

    res = run_local(fn, timeout_s=budget_s(30))
    return {role: r["result"] for role, r in res.items()}


@pytest.mark.parametrize("protocol", ["ss_lr", "ss_gbdt"])
def test_the_seed_search_finds_nothing_in_what_a_party_receives(protocol, monkeypatch):
    res = _run(protocol, monkeypatch)
    for role, r in res.items():
        received = [(o, p, torch.from_numpy(E)) for o, p, E in r["openings"]]
        assert received, role  # each party received the other's opening
        assert _attack_all(received) == {}, role
        for _, _, E in received:  # and the opening looks uniform: its top bit is set about half the time
            assert 0.4 < float((E < 0).double().mean()) < 0.6
        # and no two words of the whole run, nor two bit vectors, are related beyond chance
        found, _ = r["view"].freshness(("setup", "training"))
        assert not [f for f in found if f.flagged], (role, [str(f) for f in found])


@pytest.mark.parametrize("protocol", ["ss_lr", "ss_gbdt"])
def test_positive_control_a_keystream_restarted_at_every_draw_is_flagged(protocol, monkeypatch):
    """The mutant's masks look uniform (balanced top bits) and come from 256-bit keys, beyond the seed
    search, yet its pads repeat: every party's freshness test flags it."""
    res = _run(protocol, monkeypatch, mutant=True)
    for role, r in res.items():
        for _, _, E in r["openings"]:
            assert 0.4 < float((E < 0).mean()) < 0.6, role
        found, _ = r["view"].freshness(("setup", "training"))
        assert {f.name for f in found if f.flagged} >= {"nearest words", "same position"}, (
            role,
            [str(f) for f in found],
        )
