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

Those checks are marginal: they pass a pad reused across trees or levels, whose two openings
subtract to a difference of plaintexts. So each party's whole view must also be fresh
(:mod:`tests.attacks.freshness`), in both modes, and two mutants that reuse the histogram pad
(across trees; across levels and trees) are the positive controls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpc_fl.models.gbdt import NO_SPLIT, GBDTParams, PlainGBDT
from mpc_fl.protocols.base import LocalData
from mpc_fl.runtime.local import run_local
from tests.attacks import view as views
from tests.budget import budget_s

SMALL = 2**32
PARAMS = GBDTParams(n_trees=2, max_depth=2, n_bins=8)
PHASES = ("training", "scoring")
#: the whole run: set-up opens the bin matrices
VIEW_PHASES = ("setup", *PHASES)
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


def _reuse_histogram_pad(monkeypatch, across: str) -> None:  # noqa: ANN001
    """Mutant: each level's histogram opening ``U - b`` reuses a pad. ``across="trees"``: every tree's
    level ``l`` takes tree 0's level-``l`` pad; ``"levels"``: every level of every tree takes the first
    pad (levels 0 and 1 open the same shape). The dealer reuses the same ``b`` for its correlation,
    so the trees stay exact; each draw still advances the streams. The forked parties and dealer
    inherit the patch."""
    from crypten.mpc.provider.ttp_provider import TTPClient

    from mpc_fl.crypto import fixed_mask
    from mpc_fl.crypto.dealer import Dealer

    first: dict = {}
    calls = [0]

    def reused(b: torch.Tensor) -> torch.Tensor:
        level = calls[0] % PARAMS.max_depth  # one histogram opening per level
        calls[0] += 1
        return first.setdefault((level if across == "trees" else None, tuple(b.shape)), b)

    def t_matmul_many(mats, u):  # noqa: ANN001, ANN202 - FixedMaskMatrix.t_matmul_many, pad reused
        client, comm = TTPClient.get(), fixed_mask.comm.get()
        size_b = tuple(u.size())
        b = reused(fixed_mask.generate_random_ring_element(size_b, generator=client.get_generator()))
        c_sizes = [(m.shape[1], *size_b[1:]) for m in mats]
        if comm.get_rank() == 0:
            flat = client.ttp_request("fixed_mask_triple_many", None, [m.key for m in mats], size_b)
            cs = list(torch.split(flat, [torch.Size(c).numel() for c in c_sizes]))
            cs = [c.reshape(size) for c, size in zip(cs, c_sizes, strict=True)]
        else:
            cs = [
                fixed_mask.generate_random_ring_element(c, generator=client.get_generator()) for c in c_sizes
            ]
        f = comm.all_reduce(u._tensor.share - b)
        return [m._result("t_matmul", f, b, c, None, u) for m, c in zip(mats, cs, strict=True)]

    def triple_many(self, keys, size_b):  # noqa: ANN001, ANN202 - Dealer.fixed_mask_triple_many, b reused
        b = reused(self._get_additive_PRSS(tuple(size_b)))
        out = []
        for key in keys:
            c = self._mask_op(key, "t_matmul", b)
            out.append((c - self._get_additive_PRSS(c.size(), remove_rank=True)).reshape(-1))
        return torch.cat(out)

    monkeypatch.setattr(fixed_mask.FixedMaskMatrix, "t_matmul_many", staticmethod(t_matmul_many))
    monkeypatch.setattr(Dealer, "fixed_mask_triple_many", triple_many)


def _run(
    data: tuple,
    oblivious: bool,
    mutant: str | None = None,
    monotone: dict | None = None,
    importance: bool = False,
) -> dict:
    """One run; each party's whole view (:mod:`tests.attacks.view`) and every message length it receives.

    ``monotone``: each party's own constraints (features ``b0..b2`` at the bank, ``p0..p2`` at the
    provider); ``mutant="open node signs"`` opens each tree's shared split signs to everyone;
    ``importance``: then each party's feature importance (phase "importance"), and ``mutant="open
    importance"`` opens every party's to everyone."""
    from mpc_fl.protocols.ss_gbdt import SecretSharedGBDT
    from mpc_fl.runtime.crypten_comm import MeshCommunicator

    Xb, Xp, y = data
    with pytest.MonkeyPatch.context() as mp:
        whole = views.record(mp)
        lengths: list[int] = []
        recv_bytes = MeshCommunicator._recv_bytes

        def spy_lengths(self, src, group, expect=None):  # noqa: ANN001, ANN202
            out = recv_bytes(self, src, group, expect)
            if self.mesh.ledger.phase_name in PHASES:
                lengths.append(len(out))
            return out

        mp.setattr(MeshCommunicator, "_recv_bytes", spy_lengths)
        if mutant == "open node signs":
            honest = SecretSharedGBDT._node_signs

            def opened(self, splits, routes):  # noqa: ANN001, ANN202
                out = honest(self, splits, routes)
                out.get_plain_text()  # every party learns which nodes split on a constrained feature
                return out

            mp.setattr(SecretSharedGBDT, "_node_signs", opened)
        elif mutant == "open importance":
            from crypten.mpc import MPCTensor

            plain = MPCTensor.get_plain_text

            def to_everyone(self, dst=None):  # noqa: ANN001, ANN202
                return plain(self)  # every block to every party

            mp.setattr(MPCTensor, "get_plain_text", to_everyone)
        elif mutant:
            _reuse_histogram_pad(mp, mutant)

        def fn(session):  # noqa: ANN001, ANN202
            X = Xb if session.role == "bank" else Xp
            names = tuple(f"{session.role[0]}{j}" for j in range(X.shape[1]))
            own = (monotone or {}).get(session.role, "")
            proto = SecretSharedGBDT(PARAMS, oblivious=oblivious, monotone=own)
            proto.fit(session, LocalData(X[:N], y[:N] if session.role == "bank" else None, names))
            scores = proto.decision_function(session, LocalData(X[N:], None, names))
            found = None
            if importance:
                with session.channel.phase("importance"):
                    found = proto.feature_importance(session)
            return {"view": whole.export(), "lengths": list(lengths), "scores": scores, "importance": found}

        return {r: out["result"] for r, out in run_local(fn, timeout_s=budget_s(60)).items()}


def _small(view: views.View, phase: str) -> np.ndarray:
    """Every plaintext-sized value the party sees opened or broadcast: the attack's finds."""
    opened = view.ring_words((phase,), ("open", "broadcast"))
    return np.concatenate(
        [v[np.abs(v.astype(np.float64)) < SMALL] for v in opened] or [np.zeros(0, np.int64)]
    )


def _top_bit_balanced(view: views.View) -> bool:
    """The top bit of all training openings together is set about half the time (a marginal check)."""
    words = np.concatenate(view.ring_words(("training",), ("open", "broadcast")))
    return abs(float((words < 0).mean()) - 0.5) < 5 * 0.5 / np.sqrt(words.size)


@pytest.fixture(scope="module")
def datasets() -> dict:
    data = _datasets()
    owners = {name: _owners(*d) for name, d in data.items()}
    assert owners["bank"] != owners["provider"]  # the trees differ: there is something to find
    assert {o for t in owners["bank"] for o in t} == {0} and 1 in {o for t in owners["provider"] for o in t}
    return data


@pytest.fixture(scope="module")
def runs(datasets) -> dict:
    """Each (dataset, mode) run once, for every test that reads it."""
    memo: dict = {}

    def get(name: str, oblivious: bool) -> dict:
        if (name, oblivious) not in memo:
            memo[(name, oblivious)] = _run(datasets[name], oblivious)
        return memo[(name, oblivious)]

    return get


def test_positive_control_the_attack_finds_the_owners_in_the_default_mode(runs, datasets):
    views_ = {name: runs(name, False) for name in datasets}
    for role in ("bank", "provider"):
        a, b = (_small(views_[name][role]["view"], "training") for name in ("bank", "provider"))
        assert a.size and b.size  # revealed plaintexts
        assert not np.array_equal(a, b)  # and they tell the two datasets apart


def test_the_attack_finds_nothing_in_the_oblivious_mode(runs, datasets):
    views_ = {name: runs(name, True) for name in datasets}
    for name in datasets:
        for role in ("bank", "provider"):
            v = views_[name][role]["view"]
            assert _small(v, "training").size == 0, (name, role)
            assert _top_bit_balanced(v), (name, role)
        # scoring: the provider learns nothing, the bank only its scores (one value per test row)
        assert _small(views_[name]["provider"]["view"], "scoring").size == 0
        assert _small(views_[name]["bank"]["view"], "scoring").size == N_TEST
    for role in ("bank", "provider"):  # the schedule does not depend on the trees
        assert views_["bank"][role]["lengths"] == views_["provider"][role]["lengths"]


@pytest.mark.parametrize("oblivious", [True, False], ids=["oblivious", "default"])
def test_every_pad_in_a_partys_whole_view_is_fresh(runs, datasets, oblivious):
    """No two received ring words closer than chance (over all of them, and at the same position of
    any two equally long vectors: across levels and trees), no two bit vectors agreeing beyond
    chance, in training and scoring. The vectors left out are the revealed plaintexts: the public
    feature counts, whether some party has monotone constraints, in the default mode the split owners (everyone) and own splits (the owner), and
    the bank's scores."""
    for name in datasets:
        for role in ("bank", "provider"):
            found, revealed = runs(name, oblivious)[role]["view"].freshness(VIEW_PHASES)
            assert not [f for f in found if f.flagged], (name, role, [str(f) for f in found])
            assert all(f.pairs > 0 for f in found), (name, role, [str(f) for f in found])
            sizes = sorted(v.size for v in revealed)
            if oblivious:  # the feature counts, [some party has monotone constraints], the bank's scores
                assert sizes == ([1, 2, N_TEST] if role == "bank" else [1, 2]), (name, role, sizes)
            else:  # plus, per level of each tree, the owners and this party's own candidates
                assert len(sizes) == 2 + PARAMS.n_trees * PARAMS.max_depth * 2 + (role == "bank"), (
                    name,
                    sizes,
                )


@pytest.mark.parametrize("across", ["trees", "levels"])
def test_positive_control_a_histogram_pad_reused_across_trees_or_levels_is_flagged(runs, datasets, across):
    """The mutant's trees are exact (the bank's scores match the honest run's) and its openings pass
    the marginal checks above (no small value, top bits balanced), yet two histogram openings
    subtract to a difference of histograms' inputs: every party's freshness test flags it."""
    honest = runs("provider", True)
    mutant = _run(datasets["provider"], oblivious=True, mutant=across)
    np.testing.assert_allclose(mutant["bank"]["scores"], honest["bank"]["scores"], atol=1e-3)
    for role in ("bank", "provider"):
        v = mutant[role]["view"]
        assert _small(v, "training").size == 0 and _top_bit_balanced(v), role
        found, _ = v.freshness(VIEW_PHASES)
        assert "same position" in {f.name for f in found if f.flagged}, (role, [str(f) for f in found])


def test_default_mode_routing_sends_only_padded_shares_and_bits(runs):
    """Default mode routes rows with the owner's private bits: the owner receives the other party's
    shares under one-time pads (never a small value), the other party the owner's bits under
    one-time pads (balanced), in training and in the margin update. (Their freshness across
    levels and trees is part of the whole-view test above.)"""
    out = runs("provider", False)  # both parties own splits here
    words = {r: out[r]["view"].ring_words(("training",), ("private",)) for r in out}
    assert sum(w.size for ws in words.values() for w in ws) > 0  # so somebody receives masked shares
    for role in ("bank", "provider"):
        assert not any((np.abs(w.astype(np.float64)) < SMALL).any() for w in words[role]), role
        bits = out[role]["view"].bit_vectors(("training",), ("private",))
        if bits:
            b = np.concatenate(bits)
            assert abs(b.mean() - 0.5) < 5 * 0.5 / np.sqrt(b.size), role


def test_the_oblivious_mode_hides_which_constraints_a_party_declared(datasets):
    """Two runs whose provider declares different monotone constraints: each party's view holds no
    plaintext in training but the public flag that some party has constraints (set-up), the same
    message lengths in both runs, fresh pads throughout. Positive control: a mutant that opens the
    shared split signs is found by the same attack."""
    data = datasets["provider"]
    specs = {
        "up": {"bank": "b0:+1", "provider": "p0:+1"},
        "down": {"bank": "b0:+1", "provider": "p0:-1,p1:+1"},
    }
    got = {name: _run(data, True, monotone=spec) for name, spec in specs.items()}
    for name, res in got.items():
        for role in ("bank", "provider"):
            v = res[role]["view"]
            assert _small(v, "training").size == 0, (name, role)
            found, revealed = v.freshness(VIEW_PHASES)
            assert not [f for f in found if f.flagged], (name, role, [str(f) for f in found])
            sizes = sorted(r.size for r in revealed)  # the flag, the feature counts (and the bank's scores)
            assert sizes == ([1, 2, N_TEST] if role == "bank" else [1, 2]), (name, role, sizes)
        assert _small(res["bank"]["view"], "scoring").size == N_TEST
    for role in ("bank", "provider"):
        assert got["up"][role]["lengths"] == got["down"][role]["lengths"]
    mutant = _run(data, True, mutant="open node signs", monotone=specs["down"])
    np.testing.assert_allclose(mutant["bank"]["scores"], got["down"]["bank"]["scores"], atol=1e-2)
    for role in ("bank", "provider"):
        assert _small(mutant[role]["view"], "training").size > 0, role


def test_feature_importance_opens_to_each_party_its_own_features_only(datasets):
    """The importance phase's plaintexts at each party are its own features' total gains and split
    counts (2 x 3 values), nothing of the other's; positive control: a mutant opening every party's
    block to everyone is found by the same attack (twice as many)."""
    honest = _run(datasets["provider"], True, importance=True)
    mutant = _run(datasets["provider"], True, mutant="open importance", importance=True)
    for role in ("bank", "provider"):
        assert _small(honest[role]["view"], "importance").size == 2 * 3, role
        assert _small(mutant[role]["view"], "importance").size == 2 * 2 * 3, role
    assert honest["provider"]["importance"]["splits"].sum() > 0  # the provider's features were used
