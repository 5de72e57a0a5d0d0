"""Parameters declare their help, type and accepted values next to their default.

Why: every process checks a run's parameters before it connects (``mpc_fl.protocols.check_options``),
and ``mpc-fl protocols`` prints what each accepts, from this one declaration; ``validate()`` in the
dataclasses re-asserts the same declarations, so a protocol never runs on a value the CLI refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Accepts:
    """The values a parameter accepts: one of ``choices``, or a number within the bounds given."""

    choices: tuple[Any, ...] = ()
    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None

    def check(self, key: str, value: Any) -> None:
        """Raise ValueError naming ``key``, what it accepts and the value given."""
        if self.choices and value not in self.choices:
            raise ValueError(f"{key} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        too_low = (self.at_least is not None and value < self.at_least) or (
            self.above is not None and value <= self.above
        )
        if too_low or (self.at_most is not None and value > self.at_most):
            raise ValueError(
                f"{key} must be {'in ' if '..' in self.describe() else ''}{self.describe()}, got {value!r}"
            )

    def describe(self) -> str:
        """What ``mpc-fl protocols`` prints: ``2..127``, ``> 0``, ``poly|exact``; "" if anything goes."""
        if self.choices:
            return "|".join(map(str, self.choices))
        low = f">= {self.at_least:g}" if self.at_least is not None else ""
        low = f"> {self.above:g}" if self.above is not None else low
        if self.at_least is not None and self.at_most is not None:
            return f"{self.at_least:g}..{self.at_most:g}"
        high = f"<= {self.at_most:g}" if self.at_most is not None else ""
        return ", ".join(s for s in (low, high) if s)


@dataclass(frozen=True)
class Option:
    """A parameter of a protocol itself (beyond the model's hyperparameters), with its help and range."""

    default: Any
    help: str
    accepts: Accepts = Accepts()


def option(default: object, help: str, **accepts: Any) -> Option:  # noqa: A002 - the word users read
    return Option(default, help, Accepts(**accepts))


def param(default: object, help: str, **accepts: Any) -> Any:  # noqa: A002 - the word users read
    """A dataclass field with a default, the one line ``mpc-fl protocols`` shows and what it accepts."""
    return field(default=default, metadata={"help": help, "accepts": Accepts(**accepts)})


def options_of(params_cls: type) -> dict[str, Option]:
    """A hyperparameter dataclass's fields as options (defaults, help, accepted values)."""
    return {
        f.name: Option(f.default, f.metadata.get("help", ""), f.metadata.get("accepts", Accepts()))
        for f in dataclasses.fields(params_cls)
    }


def check_declared(params: object) -> None:
    """Re-assert every field of a parameter dataclass against its declaration (raises ValueError)."""
    for key, opt in options_of(type(params)).items():
        opt.accepts.check(key, getattr(params, key))
