"""CrypTen's comparisons through the carry-only sign test (two computing parties and the dealer).

Why: every CrypTen comparison (``<``, ``>=``, ``relu``, ``sign``, ``abs``, ``max``) ends in
``MPCTensor._ltz``, which turns the whole 64-bit value into binary shares with a full
Kogge-Stone adder (13 word-ANDs: 832 AND bits per element, one dealer request per AND level)
and converts the sign bit back. With two computing parties the sign of ``x0 + x1`` needs only
the carry out of the low 63 bits: :meth:`mpc_fl.crypto.online.TwoParty.msb`, 283 bits sent per
element and party in six rounds (CrypTen: 832 AND bits, eight rounds), with all its correlations
in one dealer request. :func:`install` routes ``_ltz``
there, so every protocol that compares (SS-GBDT's argmax, validity tests and range reduction;
SS-LR's CrypTen sigmoids) uses it. Three or more computing parties, or CrypTen's TFP (debug
only), keep CrypTen's circuit. The result is exact for every ring value, like CrypTen's.
"""

from __future__ import annotations

from collections.abc import Callable

from mpc_fl.crypto._crypten_compat import crypten
from mpc_fl.crypto.online import TwoParty, plan_msb
from mpc_fl.crypto.preprocessing import Plan, fetch

# isort: split

from crypten.mpc import MPCTensor  # noqa: E402
from crypten.mpc.provider.ttp_provider import TrustedThirdParty  # noqa: E402
from crypten.mpc.ptype import ptype as share_type  # noqa: E402

_crypten_ltz = MPCTensor._ltz
#: set by :func:`install`: whether CrypTen's randomness is the cryptographic one (never true before)
_rng_is_secure: Callable[[], bool] = lambda: False  # noqa: E731


def carry_only_applies(x: MPCTensor) -> bool:
    """Arithmetic shares, two computing parties, the dealer (TTP) as CrypTen's triple provider."""
    comm = crypten.communicator.get()
    return (
        x.ptype == share_type.arithmetic
        and comm.get_world_size() == 2
        and isinstance(crypten.mpc.get_default_provider(), TrustedThirdParty)
    )


def ltz(x: MPCTensor) -> MPCTensor:
    """``[x < 0]`` as exact 0/1 shares (precision 0), like CrypTen's ``_ltz``."""
    if not _rng_is_secure():  # a stray direct import must not compare over MT19937 pads
        raise RuntimeError(
            "comparisons need mpc_fl.crypto.secure_crypten's randomness: import crypten from there"
        )
    if not carry_only_applies(x):
        return _crypten_ltz(x)
    share = x.share
    plan = Plan()
    plan_msb(plan, share.numel())
    comm = crypten.communicator.get()
    engine = TwoParty(fetch(plan, {}), comm.get_rank(), comm)
    return MPCTensor.from_shares(engine.msb(share), precision=0)


def install(rng_is_secure: Callable[[], bool]) -> None:
    """Route CrypTen's comparisons through :func:`ltz` (idempotent).

    Called by :func:`mpc_fl.crypto.secure_crypten.install` once CrypTen's randomness is replaced;
    ``rng_is_secure`` is re-checked at every comparison, so this module needs no import back.
    """
    global _rng_is_secure
    _rng_is_secure = rng_is_secure
    MPCTensor._ltz = ltz


def installed() -> bool:
    return MPCTensor._ltz is ltz
