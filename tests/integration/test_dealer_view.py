"""The dealer learns the sizes and the public schedule, nothing about the data: playing the
dealer, with every message it receives, two runs on different features and labels of the same
shapes look byte for byte the same, while two runs with another public setting do not. SS-LR
(its online engine's plans) and SS-GBDT (CrypTen's requests, then one batch per tree)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpc_fl.models.lr import LRParams
from mpc_fl.protocols.base import LocalData
from mpc_fl.runtime.local import run_local
from tests.attacks import dealer_log


def _protocol(name: str, setting: int):  # noqa: ANN202
    """The protocol under test; ``setting`` is a public choice (LR batch size, GBDT bins) the dealer may see."""
    if name == "ss_lr":
        from mpc_fl.protocols.ss_lr import SecretSharedLR

        return SecretSharedLR(LRParams(n_epochs=2, batch_size=setting, min_iterations=0))
    from mpc_fl.models.gbdt import GBDTParams
    from mpc_fl.protocols.ss_gbdt import SecretSharedGBDT

    return SecretSharedGBDT(GBDTParams(n_trees=3, max_depth=2, n_bins=setting))  # trees 2 and 3: batches


def _dealer_view(
    monkeypatch, tmp_path: Path, seed: int, name: str = "ss_lr", setting: int = 50
) -> tuple[list[bytes], list]:  # noqa: ANN001
    """Every payload the dealer receives in one run (the forked dealer inherits the patch), and
    the public split owners of an SS-GBDT run (empty for SS-LR)."""
    log = tmp_path / f"dealer-{name}-{seed}-{setting}.bin"
    dealer_log.record(monkeypatch, log)
    gen = np.random.default_rng(seed)
    Xb, Xp = gen.normal(size=(300, 3)), gen.normal(size=(300, 4))
    y = (gen.random(300) < 0.4).astype(np.int64)

    def fn(session):  # noqa: ANN001, ANN202
        X = Xb if session.role == "bank" else Xp
        proto = _protocol(name, setting)
        proto.fit(session, LocalData(X, y if session.role == "bank" else None))
        return [o.tolist() for o in getattr(proto, "owners_", [])]

    owners = run_local(fn)["bank"]["result"]
    return dealer_log.payloads(log), owners


@pytest.mark.parametrize(("name", "setting", "other"), [("ss_lr", 50, 60), ("ss_gbdt", 8, 6)])
def test_the_dealer_sees_the_same_messages_whatever_the_data(monkeypatch, tmp_path, name, setting, other):
    first, owners_1 = _dealer_view(monkeypatch, tmp_path, seed=1, name=name, setting=setting)
    second, owners_2 = _dealer_view(monkeypatch, tmp_path, seed=2, name=name, setting=setting)
    assert len(first) > 0
    assert first == second
    if (
        name == "ss_gbdt"
    ):  # the products with an owner's private bits did not tell the dealer who owns a split
        assert owners_1 != owners_2
    # positive control: what the dealer does learn (the public settings' shapes) shows up in its view
    assert _dealer_view(monkeypatch, tmp_path, seed=1, name=name, setting=other)[0] != first
