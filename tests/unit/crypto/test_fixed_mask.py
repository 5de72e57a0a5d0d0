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
