"""The dealer learns the sizes and the public batch schedule, nothing about the data: playing the
dealer, with every message it receives, two SS-LR runs on different features and labels of the
same shapes look byte for byte the same, while two runs with different batch sizes do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpc_fl.models.lr import LRParams
from mpc_fl.protocols.base import LocalData
from mpc_fl.runtime.local import run_local
from mpc_fl.runtime.mesh import Mesh

_RECV = Mesh.recv  # the real one, whatever an earlier call patched in


def _dealer_view(monkeypatch, tmp_path: Path, seed: int, batch_size: int = 50) -> list[bytes]:  # noqa: ANN001
    """Every payload the dealer receives in one default SS-LR run (the forked dealer inherits the patch)."""
    from mpc_fl.protocols.ss_lr import SecretSharedLR

    log = tmp_path / f"dealer-{seed}-{batch_size}.bin"

    def recording_recv(self, peer, channel, timeout_s=None):  # noqa: ANN001, ANN202
        data = _RECV(self, peer, channel, timeout_s)
        if self.me == "dealer":
            with log.open("ab") as fh:
                fh.write(len(data).to_bytes(8, "little") + bytes(data))
        return data

    monkeypatch.setattr(Mesh, "recv", recording_recv)
    gen = np.random.default_rng(seed)
    Xb, Xp = gen.normal(size=(300, 3)), gen.normal(size=(300, 4))
    y = (gen.random(300) < 0.4).astype(np.int64)
    params = LRParams(n_epochs=2, batch_size=batch_size, min_iterations=0)

    def fn(session):  # noqa: ANN001, ANN202
        X = Xb if session.role == "bank" else Xp
        SecretSharedLR(params).fit(session, LocalData(X, y if session.role == "bank" else None))

    run_local(fn)
    raw, out = log.read_bytes(), []
    while raw:
        n = int.from_bytes(raw[:8], "little")
        out.append(raw[8 : 8 + n])
        raw = raw[8 + n :]
    return out


def test_the_dealer_sees_the_same_messages_whatever_the_data(monkeypatch, tmp_path):
    first = _dealer_view(monkeypatch, tmp_path, seed=1)
    second = _dealer_view(monkeypatch, tmp_path, seed=2)
    assert len(first) > 0
    assert first == second
    # positive control: what the dealer does learn (the public schedule's shape) shows up in its view
    assert _dealer_view(monkeypatch, tmp_path, seed=1, batch_size=60) != first
