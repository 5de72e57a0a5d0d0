"""Registry of vertical protocols, built by name with keyword hyperparameters.

The registry is static (no protocol module is imported to list or check parameters), so the
CLI can refuse a misspelt ``--param`` before it reads data or connects: ``mpc-fl protocols``
lists every protocol with its parameters, defaults and one line each.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

from mpc_fl.protocols.base import VerticalProtocol


@dataclass(frozen=True)
class Spec:
    """Where a protocol lives, its hyperparameter dataclass, one line about it, and its own options."""

    module: str
    cls: str
    params: str  # "module:Class" of the hyperparameter dataclass
    summary: str
    #: options of the protocol itself (beyond the model's hyperparameters): name -> (default, help)
    options: dict[str, tuple[Any, str]] = field(default_factory=dict)
    #: computes on CrypTen shares, so it needs the dealer
    uses_crypten: bool = False
    #: "module:function" that checks the values of :attr:`options` (raises ValueError), or ""
    check: str = ""


#: the homomorphic baselines' own options (schemes: mpc_fl.crypto.paillier.SCHEMES)
_HE_OPTIONS = {
    "scheme": (
        "ou",
        "additive HE scheme: ou (Okamoto-Uchiyama, SecretFlow SGB's default) or paillier (ZPaillier)",
    ),
    "key_bits": (
        0,
        "modulus bits, at least 2048; 0: the scheme's default (ou 3072, paillier 2048: equal security)",
    ),
}
_HE_CHECK = "mpc_fl.crypto.paillier:check_he_options"
REGISTRY: dict[str, Spec] = {
    "plain_lr": Spec(
        "mpc_fl.protocols.plain", "CentralisedLR", "mpc_fl.models.lr:LRParams",
        "centralised LR: providers send raw features to the bank (no privacy; the accuracy ceiling)",
    ),
    "plain_gbdt": Spec(
        "mpc_fl.protocols.plain", "CentralisedGBDT", "mpc_fl.models.gbdt:GBDTParams",
        "centralised GBDT: providers send raw features to the bank (no privacy; the accuracy ceiling)",
    ),
    "ss_lr": Spec(
        "mpc_fl.protocols.ss_lr", "SecretSharedLR", "mpc_fl.models.lr:LRParams",
        "secret-shared logistic regression (CrypTen, triples from the dealer); only the bank learns scores",
        {
            "mask": ("fixed", "fixed: open each feature matrix once (fast); generic: CrypTen's Beaver products"),
            "reveal_model": (False, "after training, reveal each party's own weights to it (and the intercept to the bank)"),
        },
        uses_crypten=True,
    ),
    "ss_gbdt": Spec(
        "mpc_fl.protocols.ss_gbdt", "SecretSharedGBDT", "mpc_fl.models.gbdt:GBDTParams",
        "secret-shared gradient-boosted trees (CrypTen, dealer); split owners public, memberships secret "
        "(oblivious=true: nothing public)",
        {
            "mask": ("fixed", "fixed: open each bin-indicator matrix once (fast); generic: CrypTen's Beaver products"),
            "oblivious": (False, "hide every split's owner, feature and bin and every node's rows and paths"),
        },
        uses_crypten=True,
    ),
    "paillier_lr": Spec(
        "mpc_fl.protocols.paillier_lr", "PaillierLR", "mpc_fl.models.lr:LRParams",
        "hetero-LR on additive HE (OU or Paillier) without arbiter (FATE/SecretFlow-style); the bank "
        "sees partial logits",
        _HE_OPTIONS, check=_HE_CHECK,
    ),
    "secureboost": Spec(
        "mpc_fl.protocols.secureboost", "SecureBoost", "mpc_fl.models.gbdt:GBDTParams",
        "SecureBoost on additive HE (OU or Paillier; FATE/SecretFlow SGB-style); the provider sees every "
        "node's customers",
        _HE_OPTIONS, check=_HE_CHECK,
    ),
}  # fmt: skip


def _spec(name: str) -> Spec:
    if name not in REGISTRY:
        raise ValueError(
            f"unknown protocol {name!r}; choose from {', '.join(sorted(REGISTRY))} (see `mpc-fl protocols`)"
        )
    return REGISTRY[name]


def _load(path: str):  # noqa: ANN202
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def parameters(name: str) -> list[tuple[str, Any, str]]:
    """Every parameter of protocol ``name``: (key, default, one-line help), hyperparameters first."""
    spec = _spec(name)
    rows = [(f.name, f.default, f.metadata.get("help", "")) for f in dataclasses.fields(_load(spec.params))]
    return rows + [(k, d, h) for k, (d, h) in spec.options.items()]


def describe(name: str) -> str:
    """The text ``mpc-fl protocols`` prints for one protocol."""
    lines = [f"{name}: {_spec(name).summary}"]
    lines += [f"    {k:<17} {d!r:<9} {h}" for k, d, h in parameters(name)]
    return "\n".join(lines)


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown keys, values of the wrong type and hyperparameters out of range, naming them.

    Cheap (no protocol module is imported), so every process runs it before it connects.
    """
    known = {k: d for k, d, _ in parameters(name)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"{name} has no parameter {', '.join(repr(u) for u in unknown)}; its parameters are "
            f"{', '.join(known)} (see `mpc-fl protocols {name}`)"
        )
    out = {}
    for k, v in options.items():
        default = known[k]
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(default, float):
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            v = float(v)
        else:
            ok = isinstance(v, type(default))
        if not ok:
            raise ValueError(
                f"{name}: {k} must be of type {type(default).__name__} (like {default!r}), got {v!r}"
            )
        out[k] = v
    spec = _spec(name)
    params_cls = _load(spec.params)
    fields = {f.name for f in dataclasses.fields(params_cls)}
    try:
        params_cls(**{k: v for k, v in out.items() if k in fields}).validate()  # values, not just types
        if spec.check:
            _load(spec.check)({k: v for k, v in out.items() if k not in fields})
    except ValueError as err:
        raise ValueError(f"{name}: {err} (see `mpc-fl protocols {name}`)") from None
    return out


def full_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every parameter's value for this run (defaults filled in): what the parties' handshake compares."""
    return {k: options.get(k, d) for k, d, _ in parameters(name)}


def protocol_class(name: str) -> type[VerticalProtocol]:
    spec = _spec(name)
    return getattr(importlib.import_module(spec.module), spec.cls)


def uses_crypten(name: str) -> bool:
    """Whether the protocol computes on CrypTen shares (and so needs the dealer), without importing it."""
    return _spec(name).uses_crypten


def make_protocol(name: str, **options: object) -> VerticalProtocol:
    """Build a protocol; options are its hyperparameters or its own options (see :func:`parameters`)."""
    options = check_options(name, options)
    spec = _spec(name)
    params_cls = _load(spec.params)
    fields = {f.name for f in dataclasses.fields(params_cls)}
    hyper = {k: v for k, v in options.items() if k in fields}
    extra = {k: v for k, v in options.items() if k not in fields}
    return protocol_class(name)(params_cls(**hyper), **extra)
