"""Fixed-mask products equal plaintext products, in 2PC and 3PC, and cannot wrap at our precision."""

from __future__ import annotations

import pytest

from mpc_fl.runtime.local import run_local


def _products(session):
    import torch

    from mpc_fl.crypto.fixed_mask import FixedMaskMatrix
    from mpc_fl.crypto.secure_crypten import crypten

    gen = torch.Generator().manual_seed(0)
    n = 400
    M = torch.randn(6, n, generator=gen).t()  # column-major on purpose: it must be sent row-major
    B = (torch.rand(n, 9, generator=gen) < 0.3).float()
    u, v = torch.randn(n, 2, generator=gen), torch.randn(6, generator=gen)
    owner = len(session.roles) - 1
    fm = FixedMaskMatrix(M if session.rank == owner else None, owner=owner, shape=(n, 6), precision=12)
    fb = FixedMaskMatrix(B if session.rank == 0 else None, owner=0, shape=(n, 9), precision=0)
    eu, ev = crypten.cryptensor(u, src=0), crypten.cryptensor(v, src=owner)
    rows = torch.arange(0, n, 3)
    errors = {
        "Mt_u": (fm.t_matmul(eu).get_plain_text() - M.t() @ u).abs().max().item(),
        "M_v": (fm.matmul(ev).get_plain_text() - M @ v).abs().max().item(),
        "M_rows_v": (fm.matmul(ev, rows).get_plain_text() - M[rows] @ v).abs().max().item(),
        "Bt_u_rows": (fb.t_matmul(eu[rows], rows).get_plain_text() - B[rows].t() @ u[rows])
        .abs()
        .max()
        .item(),
    }
    return errors


@pytest.mark.parametrize("roles", [("bank", "provider"), ("bank", "provider", "provider2")])
def test_fixed_mask_products_match_plaintext(roles):
    results = run_local(_products, roles)
    for role, r in results.items():
        for name, err in r["result"].items():
            assert err < 5e-3, (role, name, err)


def _wraps(session, precision: int) -> float:
    import torch

    from mpc_fl.crypto.fixed_mask import FixedMaskMatrix
    from mpc_fl.crypto.secure_crypten import crypten

    gen = torch.Generator().manual_seed(1)
    n = 200_000
    M = torch.randn(n, 2, generator=gen)
    v = torch.randn(2, generator=gen)
    fm = FixedMaskMatrix(M if session.rank == 1 else None, owner=1, shape=(n, 2), precision=precision)
    return (fm.matmul(crypten.cryptensor(v, src=0)).get_plain_text() - M @ v).abs().max().item()


def test_no_truncation_wrap_at_the_feature_precision_and_the_check_would_see_one():
    from mpc_fl.protocols.ss_lr import FEATURE_PRECISION

    ok = run_local(lambda s: _wraps(s, FEATURE_PRECISION))["bank"]["result"]
    assert ok < 1e-2
    # With 2^(40+16) per product a truncation wraps with probability ~|v|/2^7 per element:
    # the same check then sees errors of ~2^(64-56) = 256 or more.
    bad = run_local(lambda s: _wraps(s, 40))["bank"]["result"]
    assert bad > 100


@pytest.fixture
def small_blocks(monkeypatch):
    """Pieces of 5 rows and blocks of 15 rows at width 12 (forked parties and dealer inherit them)."""
    from mpc_fl.crypto import dealer

    monkeypatch.setattr(dealer, "MASK_UNIT_BYTES", 8 * 12 * 5)
    monkeypatch.setattr(dealer, "MASK_BLOCK_BYTES", 8 * 12 * 15)


def test_a_row_block_mask_regenerated_in_blocks_equals_its_one_piece_generation(small_blocks):
    import torch

    from mpc_fl.crypto.dealer import RowBlockMask, apply_mask_op, row_blocks
    from mpc_fl.crypto.prg import new_key, ring_block

    key, shape = new_key(), (47, 12)
    mask = RowBlockMask(key, shape)
    whole = mask.rows(0, 47)  # one call
    # by definition: piece u is stream u of the key, 5 rows each
    assert torch.equal(whole, torch.cat([ring_block(key, u, (min(5, 47 - 5 * u), 12)) for u in range(10)]))
    assert row_blocks(shape) == [(0, 15), (15, 30), (30, 45), (45, 47)]
    assert torch.equal(torch.cat([A for _, _, A in mask.blocks()]), whole)
    assert torch.equal(mask.rows(7, 23), whole[7:23])  # unaligned: seeks inside pieces
    assert not torch.equal(RowBlockMask(new_key(), shape).rows(0, 47), whole)
    gen = torch.Generator().manual_seed(0)
    b = torch.randint(-(2**62), 2**62, (47, 3), generator=gen)
    v = torch.randint(-(2**62), 2**62, (12,), generator=gen)
    rows = torch.tensor([40, 3, 3, 17, 0, 46, 29])
    for op, x, r in [
        ("t_matmul", b, None),
        ("matmul", v, None),
        ("t_matmul", b[rows], rows),
        ("matmul", v, rows),
    ]:
        A = whole if r is None else whole[r]
        assert torch.equal(mask.apply(op, x, r), apply_mask_op(op, A, x)), (op, r is None)


def _one_hot_vs_dense(session):
    import numpy as np
    import torch

    from mpc_fl.crypto.fixed_mask import FixedMaskMatrix, OneHotMaskMatrix
    from mpc_fl.crypto.secure_crypten import crypten
    from mpc_fl.protocols.ss_gbdt import _one_hot_bins

    n, nb, widths = 47, 4, [3, 2]
    rng = np.random.default_rng(5)
    bins = [rng.integers(0, nb, size=(n, d)).astype(np.int8) for d in widths]
    dense, hot = [], []
    for q, d in enumerate(widths):
        mine = session.rank == q
        B = _one_hot_bins(bins[q], nb)
        dense.append(FixedMaskMatrix(B if mine else None, owner=q, shape=(n, d * nb), precision=0))
        hot.append(FixedMaskMatrix.one_hot(bins[q] if mine else None, nb, owner=q, n_rows=n, n_features=d))
    assert all(isinstance(h, OneHotMaskMatrix) for h in hot)
    assert (hot[session.rank].E is None) and hot[1 - session.rank].E.shape == (
        n,
        widths[1 - session.rank] * nb,
    )
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(n, 3, generator=gen)
    eu = crypten.cryptensor(u, src=0)
    rows = torch.tensor([40, 3, 3, 17, 0, 46, 29])
    out: dict[str, bool] = {}
    for q in range(2):
        ev = crypten.cryptensor(torch.randn(widths[q] * nb, 2, generator=gen), src=1 - q)
        pairs = {
            "t_matmul": (dense[q].t_matmul(eu), hot[q].t_matmul(eu)),
            "matmul": (dense[q].matmul(ev), hot[q].matmul(ev)),
            "t_matmul_rows": (dense[q].t_matmul(eu[rows], rows), hot[q].t_matmul(eu[rows], rows)),
            "matmul_rows": (dense[q].matmul(ev, rows), hot[q].matmul(ev, rows)),
        }
        for name, (a, b) in pairs.items():
            out[f"{name}{q}"] = torch.equal(a.get_plain_text(), b.get_plain_text())
    B0 = _one_hot_bins(bins[0], nb)
    out["plain"] = bool((hot[0].t_matmul(eu).get_plain_text() - B0.t() @ u).abs().max() < 1e-3)
    mixed = FixedMaskMatrix.t_matmul_many([dense[0], hot[1], hot[0], dense[1]], eu)
    want = [dense[0], dense[1], dense[0], dense[1]]
    for i, (m, got) in enumerate(zip(want, mixed, strict=True)):
        out[f"many{i}"] = torch.equal(got.get_plain_text(), m.t_matmul(eu).get_plain_text())
    for m in dense + hot:
        m.release()
    return out


@pytest.mark.parametrize("blocks", ["default", "small"])
def test_one_hot_products_equal_the_dense_matrix_products(request, blocks):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    for role, r in run_local(_one_hot_vs_dense).items():
        assert r["result"] and all(r["result"].values()), (role, r["result"])


def _streamed_plan(session):
    import numpy as np

    from mpc_fl.crypto.fixed_mask import FixedMaskMatrix
    from mpc_fl.crypto.preprocessing import Plan, fetch

    fm = FixedMaskMatrix.one_hot(
        np.zeros((10, 2), np.int8) if session.rank == 0 else None, 4, owner=0, n_rows=10, n_features=2
    )
    plan = Plan()
    plan.add("tmatvec", fm.key, plan.add_rows(np.arange(5)))
    fetch(plan, {fm.key: fm.shape})


def test_a_preprocessing_plan_refuses_a_streamed_mask():
    from mpc_fl.runtime.local import PartyFailed

    with pytest.raises(PartyFailed, match="dense fixed-mask matrices only"):
        run_local(_streamed_plan, timeout_s=120)
