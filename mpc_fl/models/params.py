"""Hyperparameters carry a one-line help each, so the CLI can list and check them (``mpc-fl protocols``)."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def param(default: object, help: str) -> Any:  # noqa: A002 - the word users read
    """A dataclass field with a default and the one line ``mpc-fl protocols`` shows for it."""
    return field(default=default, metadata={"help": help})
