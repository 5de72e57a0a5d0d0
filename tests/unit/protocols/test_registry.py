"""The protocol registry checks every option before anything connects, the HE baselines' scheme and key included."""

from __future__ import annotations

import pytest

from mpc_fl.crypto.paillier import SCHEMES
from mpc_fl.protocols import REGISTRY, check_options, full_options, parameters


@pytest.mark.parametrize("name", ["paillier_lr", "secureboost"])
def test_he_baselines_take_a_scheme_from_the_one_list(name: str) -> None:
    assert {k: d for k, d, _ in parameters(name)}["scheme"] == "ou"
    for scheme in SCHEMES:
        assert check_options(name, {"scheme": scheme})["scheme"] == scheme
    assert full_options(name, {})["key_bits"] == 0  # the scheme's default, resolved by the protocol


@pytest.mark.parametrize(
    "options,message",
    [
        ({"scheme": "rsa"}, r"scheme must be one of ou, paillier, got 'rsa'"),
        ({"scheme": "paillier", "key_bits": 1024}, r"Paillier keys below 2048 bits are refused"),
        ({"key_bits": 1536}, r"OU keys below 2048 bits are refused"),
        ({"scheme": 1}, r"scheme must be of type str"),
    ],
)
def test_bad_scheme_or_key_is_refused_in_one_line(options: dict, message: str) -> None:
    for name in ("paillier_lr", "secureboost"):
        with pytest.raises(ValueError, match=message) as err:
            check_options(name, options)
        assert "\n" not in str(err.value)


def test_only_the_he_baselines_have_a_value_check() -> None:
    assert {n for n, s in REGISTRY.items() if s.check} == {"paillier_lr", "secureboost"}
