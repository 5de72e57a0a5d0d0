"""In a default run the provider's view says nothing about the labels (security review F2).

The provider runs the real pipeline (PSI alignment, the bank's default split, SS-LR) as its
own process and keeps every message it receives. Playing the attacker, it replays the
public stratified split against the test-row mask it was sent and also scores rows by the
mask itself: neither does better than chance. The same attacker reads labels off the mask
of the ``stratified-public`` split, which is why that split is for public data only.
"""

from __future__ import annotations

import math

import numpy as np

from mpc_fl import metrics
from mpc_fl.config import SPLIT_SEED, SPLIT_TEST_SIZE
from mpc_fl.data.party_table import PartyTable
from mpc_fl.runtime.local import run_local
from tests.attacks.split_labels import stratified_split_posterior
from tests.budget import budget_s

N = 2000


def _tables() -> tuple[PartyTable, PartyTable]:
    gen = np.random.default_rng(11)
    ids = np.arange(10_000, 10_000 + N)
    xb, xp = gen.normal(size=(N, 2)), gen.normal(size=(N, 3))
    y = ((xb[:, 0] + xp[:, 0] + gen.normal(size=N)) > 1.0).astype(np.int64)
    bank = PartyTable("bank", ids, xb, ("a", "b"), y)
    provider = PartyTable("provider", ids[::-1].copy(), xp[::-1].copy(), ("c", "d", "e"))  # another row order
    return bank, provider


def _provider_view(split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Run the pipeline; return the labels in aligned order, the provider's received mask, and its byte count."""
    from mpc_fl.app.party import run_party
    from mpc_fl.runtime.mesh import Mesh

    bank, provider = _tables()
    received: list[bytes] = []
    original = Mesh.recv

    def recording(self, peer, channel, timeout_s=None):  # noqa: ANN001, ANN202
        data = original(self, peer, channel, timeout_s)
        received.append(bytes(data))
        return data

    def fn(session):  # noqa: ANN001, ANN202
        Mesh.recv = recording  # in this party's own process only
        table = bank if session.role == "bank" else provider
        report = run_party(session, table, "ss_lr", {"n_epochs": 1}, split=split)
        return {"n_test": report.n_test, "received": received}

    res = run_local(fn, timeout_s=budget_s(20))
    # what the test (not the provider) knows: the aligned order is id order, the labels are the bank's
    order = np.argsort(bank.ids)
    y_aligned = bank.y[order]
    mask = _mask_from(res["provider"]["result"]["received"], N)
    return y_aligned, mask, sum(len(m) for m in res["provider"]["result"]["received"])


def _mask_from(messages: list[bytes], n: int) -> np.ndarray:
    """The provider's copy of the bank's is_test message (the only n-bit packed array it receives)."""
    import io

    from mpc_fl.runtime.channel import payload_of

    for m in messages:
        try:
            with np.load(io.BytesIO(payload_of(m)), allow_pickle=False) as z:
                if "is_test" in z.files:
                    return np.unpackbits(z["is_test"], count=n).astype(bool)
        except (ValueError, OSError, EOFError):
            continue
    raise AssertionError("the provider never received a test-row mask")


def _null_se(y: np.ndarray) -> float:
    n_pos = int(y.sum())
    return math.sqrt((len(y) + 1) / (12 * n_pos * (len(y) - n_pos)))


def test_a_provider_learns_nothing_about_labels_from_a_default_run():
    y, mask, n_bytes = _provider_view("random")
    assert n_bytes > 100_000 and mask.sum() == round(SPLIT_TEST_SIZE * N)
    se = _null_se(y)
    assert abs(metrics.auc(y, mask.astype(float)) - 0.5) < 4.5 * se
    n_pos = int(y.sum())
    post = stratified_split_posterior(mask, SPLIT_TEST_SIZE, SPLIT_SEED, range(n_pos - 20, n_pos + 21))
    if post is not None:  # no label sequence explains the mask in practice; if one did, it must be noise
        assert abs(metrics.auc(y, post) - 0.5) < 4.5 * se


def test_the_public_stratified_split_leaks_labels_through_the_same_view():
    y, mask, _ = _provider_view("stratified-public")
    n_pos = int(y.sum())
    post = stratified_split_posterior(mask, SPLIT_TEST_SIZE, SPLIT_SEED, range(n_pos - 20, n_pos + 21))
    assert post is not None
    assert metrics.auc(y, post) > 0.75
    certain = (post == 0) | (post == 1)
    assert certain.mean() > 0.2 and np.all(post[certain] == y[certain])
