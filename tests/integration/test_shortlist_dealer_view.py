"""The dealer's view of a shortlist: the same bytes whatever the scores, and only the sizes.

Played as in ``test_dealer_view.py``: every payload the dealer receives while the platform's
secret scores are ranked (top K and a threshold). Two runs on different scores of the same
size look byte for byte the same; the positive control, another number of prospects (what the
dealer does learn), does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpc_fl.runtime.local import run_local
from tests.attacks import dealer_log


def _dealer_view(monkeypatch, tmp_path: Path, seed: int, n: int = 200) -> list[bytes]:  # noqa: ANN001
    log = tmp_path / f"dealer-{seed}-{n}.bin"
    dealer_log.record(monkeypatch, log)
    scores = np.random.default_rng(seed).normal(size=n) * 3

    def fn(session):  # noqa: ANN001, ANN202
        import torch

        from mpc_fl.crypto import shortlist
        from mpc_fl.crypto.secure_crypten import crypten

        provider = session.roles.index("provider")
        z = crypten.cryptensor(
            torch.tensor(scores if session.role == "provider" else np.zeros(n)), src=provider
        )
        shortlist.top_k(z, 10, rank=session.rank, tie_breaker=provider).get_plain_text(dst=provider)
        cut = crypten.cryptensor(torch.tensor([0.5]), src=0)
        shortlist.above_threshold(z, cut).get_plain_text(dst=provider)

    run_local(fn)
    return dealer_log.payloads(log)


def test_the_dealer_sees_the_same_messages_whatever_the_scores(monkeypatch, tmp_path):
    first = _dealer_view(monkeypatch, tmp_path, seed=1)
    assert len(first) > 0
    assert first == _dealer_view(monkeypatch, tmp_path, seed=2)
    # positive control: the number of prospects, which the dealer does learn, shows in its view
    assert _dealer_view(monkeypatch, tmp_path, seed=1, n=300) != first
