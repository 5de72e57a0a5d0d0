"""Scoring with a saved joint model: the parties' services, the bank's decoys and its HTTP endpoint.

:mod:`~mpc_fl.app.serving.service` runs the parties' long-lived sessions and the per-query protocol,
:mod:`~mpc_fl.app.serving.decoys` hides each applicant from the providers among a fixed anonymity set,
:mod:`~mpc_fl.app.serving.http` guards and bounds the bank's endpoint, and
:mod:`~mpc_fl.app.serving.features` reads a party's own features by id.
"""

from importlib import import_module
from typing import Any

#: Where each public name lives; imported on first use, so the CLI's parser reads the decoy
#: defaults without loading the service (numpy, the protocols).
_HOME = {
    "DECOY_POLICIES": "decoys", "DEFAULT_DECOYS": "decoys", "AnonymitySets": "decoys", "DecoyError": "decoys",
    "FeatureStore": "features",
    "EndpointSettings": "http", "ScoringEndpoint": "http", "serve_http": "http", "token_from_file": "http",
    "SERVICE_OP_TIMEOUT_S": "service", "BankService": "service", "DecoySettings": "service", "Scored": "service",
    "ScoringError": "service", "ServiceSettings": "service", "serve_provider": "service",
}  # fmt: skip
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
