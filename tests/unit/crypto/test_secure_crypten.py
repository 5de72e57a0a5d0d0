"""CrypTen draws every secret from ChaCha20 streams, and its own operations still agree across parties."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mpc_fl.crypto.secure_crypten import CryptoGenerator, crypten, generate_random_ring_element
from mpc_fl.runtime.local import run_local


def test_every_crypten_module_draws_from_the_cryptographic_stream():
    import crypten.common.rng as rng

    from mpc_fl.crypto import secure_crypten

    stale = [
        f"{name}.{attr}"
        for name, module in list(sys.modules.items())
        if module is not None and (name == "crypten" or name.startswith("crypten."))
        for attr in ("generate_random_ring_element", "generate_kbit_random_tensor")
        if hasattr(module, attr) and getattr(module, attr) is not getattr(secure_crypten, attr)
    ]
    assert not stale
    assert rng.generate_random_ring_element is secure_crypten.generate_random_ring_element


def test_a_torch_generator_is_refused_in_the_secure_path():
    with pytest.raises(TypeError, match="MT19937"):
        generate_random_ring_element((3,), generator=torch.Generator().manual_seed(1))


def test_no_stream_exists_before_a_party_joins():
    with pytest.raises(RuntimeError, match="joined a federation"):
        generate_random_ring_element((3,))


def _ops(session):
    from crypten.mpc.provider.ttp_provider import TTPClient

    gens = {f: type(g[torch.device("cpu")]).__name__ for f, g in crypten.generators.items()}
    gens["dealer"] = type(TTPClient.get().get_generator()).__name__
    x = torch.linspace(-6, 6, 25)
    y = torch.linspace(3, -3, 25)
    ex, ey = crypten.cryptensor(x, src=0), crypten.cryptensor(y, src=len(session.roles) - 1)
    A = torch.arange(12.0).view(3, 4) / 10
    B = torch.arange(8.0).view(4, 2) / 10
    out = {
        "lt": (ex < ey).get_plain_text(),
        "ge": (ex >= ey).get_plain_text(),
        "sigmoid": ex.sigmoid().get_plain_text(),
        "reciprocal": (ey.abs() + 0.5).reciprocal().get_plain_text(),
        "matmul": crypten.cryptensor(A, src=0).matmul(crypten.cryptensor(B, src=1)).get_plain_text(),
        "max": ex.max().get_plain_text(),
    }
    return {"generators": gens, "values": {k: v.tolist() for k, v in out.items()}}


@pytest.mark.parametrize("roles", [("bank", "provider"), ("bank", "provider", "provider2")])
def test_crypten_operations_agree_across_parties_and_with_plaintext(roles):
    res = run_local(_ops, roles, timeout_s=120)
    x, y = torch.linspace(-6, 6, 25), torch.linspace(3, -3, 25)
    want = {
        "lt": (x < y).float(),
        "ge": (x >= y).float(),
        "sigmoid": torch.sigmoid(x),
        "reciprocal": 1 / (y.abs() + 0.5),
        "matmul": (torch.arange(12.0).view(3, 4) / 10) @ (torch.arange(8.0).view(4, 2) / 10),
        "max": x.max(),
    }
    first = res[roles[0]]["result"]["values"]
    for role in roles:
        got = res[role]["result"]
        assert set(got["generators"].values()) == {CryptoGenerator.__name__}, got["generators"]
        assert got["values"] == first  # every party opened the same values
    for name, w in want.items():
        assert np.allclose(np.array(first[name]), w.numpy(), atol=0.02), name


def test_attribute_lookup_skips_cryptens_validation_hook():
    """CrypTen checks cfg.debug.validation_mode on every attribute access; mpc_fl never validates."""
    from crypten.cryptensor import CrypTensor

    from mpc_fl.crypto.secure_crypten import crypten

    lookup = CrypTensor.__dict__["__getattribute__"]
    assert not hasattr(lookup, "__wrapped__")  # the plain lookup, not the hook
    assert not crypten.cfg.debug.validation_mode
