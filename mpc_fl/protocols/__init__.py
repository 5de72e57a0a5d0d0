"""Registry of vertical protocols, built by name with keyword hyperparameters."""

from __future__ import annotations

import dataclasses
import importlib

from mpc_fl.protocols.base import VerticalProtocol

#: name -> (module, class, hyperparameter dataclass "module:Class")
REGISTRY: dict[str, tuple[str, str, str]] = {
    "plain_lr": ("mpc_fl.protocols.plain", "CentralisedLR", "mpc_fl.models.lr:LRParams"),
    "plain_gbdt": ("mpc_fl.protocols.plain", "CentralisedGBDT", "mpc_fl.models.gbdt:GBDTParams"),
    "ss_lr": ("mpc_fl.protocols.ss_lr", "SecretSharedLR", "mpc_fl.models.lr:LRParams"),
    "ss_gbdt": ("mpc_fl.protocols.ss_gbdt", "SecretSharedGBDT", "mpc_fl.models.gbdt:GBDTParams"),
    "paillier_lr": ("mpc_fl.protocols.paillier_lr", "PaillierLR", "mpc_fl.models.lr:LRParams"),
    "secureboost": ("mpc_fl.protocols.secureboost", "SecureBoost", "mpc_fl.models.gbdt:GBDTParams"),
}


def _load(path: str):  # noqa: ANN202
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def protocol_class(name: str) -> type[VerticalProtocol]:
    if name not in REGISTRY:
        raise ValueError(f"unknown protocol {name!r}; choose from {sorted(REGISTRY)}")
    module, cls, _ = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def make_protocol(name: str, **options: object) -> VerticalProtocol:
    """Build a protocol; options are its hyperparameters (LRParams/GBDTParams fields) or its own flags."""
    cls = protocol_class(name)
    params_cls = _load(REGISTRY[name][2])
    fields = {f.name: f.type for f in dataclasses.fields(params_cls)}
    hyper = {k: v for k, v in options.items() if k in fields}
    extra = {k: v for k, v in options.items() if k not in fields}
    try:
        return cls(params_cls(**hyper), **extra)
    except TypeError as err:
        raise ValueError(f"{name}: bad option ({err}); hyperparameters are {sorted(fields)}") from None
