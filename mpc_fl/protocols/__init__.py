"""Registry of vertical protocols and their named cases: the one table every list reads.

The CLI's help and ``mpc-fl protocols``, the demo, every benchmark, every figure and the contract
tests loop over :data:`REGISTRY` (how to build a protocol and what its parameters accept) and
:data:`CASES` (named settings of a protocol, e.g. ``ss_gbdt_oblivious``, ``paillier_lr_2048``).
The table is static (no protocol module is imported to list or check parameters), so every
process refuses a misspelt key, a value out of range or an incompatible combination before it
reads data or connects. Adding a protocol: its module, one :class:`Spec` and its :class:`Case`
rows here, its tests (see the README's "Adding a protocol").
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

from mpc_fl.models.params import Accepts, Option, option, options_of
from mpc_fl.protocols.base import VerticalProtocol


@dataclass(frozen=True)
class Excludes:
    """An incompatible combination: when every ``when`` value is set, no ``forbids`` value may be."""

    when: dict[str, Any]
    forbids: dict[str, Any]
    why: str

    def check(self, values: dict[str, Any]) -> None:
        if all(values.get(k) == v for k, v in self.when.items()) and any(
            values.get(k) == v for k, v in self.forbids.items()
        ):
            given = ", ".join(f"{k}={_text(values[k])}" for k in (*self.when, *self.forbids))
            raise ValueError(f"{given} cannot be combined: {self.why}")


@dataclass(frozen=True)
class Spec:
    """Where a protocol lives, its hyperparameters, one line about it, and its own options."""

    module: str
    cls: str
    params: str  # "module:Class" of the hyperparameter dataclass
    summary: str
    #: "lr" or "gbdt": the family whose default and smoke settings its cases start from
    family: str
    #: options of the protocol itself (beyond the model's hyperparameters)
    options: dict[str, Option] = field(default_factory=dict)
    #: computes on CrypTen shares, so it needs the dealer
    uses_crypten: bool = False
    #: "module:function" for checks a declaration cannot say (raises ValueError), or ""
    check: str = ""
    #: hyperparameters this protocol accepts less of than the model does
    narrower: dict[str, Accepts] = field(default_factory=dict)
    #: incompatible combinations of its parameters
    excludes: tuple[Excludes, ...] = ()
    #: how it gives reason codes (:mod:`mpc_fl.models.reasons`): "shares" (ranked on shares: needs
    #: the dealer), "plain" (in the clear at the bank) or "" (not yet)
    reasons: str = ""
    #: whether it reports feature importance (:meth:`VerticalProtocol.feature_importance`)
    importance: bool = False


#: Every suite a case can be in: the demo, the benchmark suites, the CI's smoke run of them
#: (``smoke``) and the model-lifecycle tests. A case is in all of them unless it says otherwise.
SUITES = frozenset({"demo", "protocols", "smoke", "network", "serving", "scaling", "stress", "lifecycle"})


@dataclass(frozen=True)
class Case:
    """A protocol with a fixed set of options: what benchmarks record and figures label."""

    name: str
    protocol: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    suites: frozenset[str] = SUITES

    def settings(self, setting: str = "default") -> dict[str, Any]:
        """Its family's ``default`` (or ``smoke``) hyperparameters, then its own options."""
        return {**FAMILIES[REGISTRY[self.protocol].family][setting], **self.options}


_LR = {"learning_rate": 0.5, "n_epochs": 3, "batch_size": 1024, "sigmoid": "poly"}
_GBDT = {"n_trees": 20, "max_depth": 4, "learning_rate": 0.3, "n_bins": 32}
#: One default setting per family (the benchmarks' and the demo's; a protocol differs only in
#: how it computes), and a smoke setting that runs a case end to end in seconds.
FAMILIES: dict[str, dict[str, dict[str, Any]]] = {
    "lr": {"default": _LR, "smoke": {**_LR, "n_epochs": 1, "min_iterations": 10}},
    "gbdt": {"default": _GBDT, "smoke": {**_GBDT, "n_trees": 2, "max_depth": 2}},
}

#: the homomorphic baselines' own options (schemes: mpc_fl.crypto.paillier.SCHEMES)
_HE_OPTIONS = {
    "scheme": option(
        "ou",
        "additive HE scheme: ou (Okamoto-Uchiyama, SecretFlow SGB's default) or paillier (ZPaillier)",
        choices=("ou", "paillier"),
    ),
    "key_bits": option(
        0,
        "modulus bits, at least 2048; 0: the scheme's default (ou 3072, paillier 2048: equal security)",
        at_least=0,
    ),
}
_HE_CHECK = "mpc_fl.crypto.paillier:check_he_options"
#: every protocol's party-local option (mpc_fl.models.monotone): each party names its own features
_MONOTONE = {
    "monotone": option(
        "",
        "this party's own monotone constraints, feature:+1 (the score never falls as it grows) or "
        "feature:-1, comma-separated; party-local: not in the handshake",
    )
}
#: options each party sets for itself: left out of the handshake (a provider's constraints are its own)
LOCAL_OPTIONS = frozenset(_MONOTONE)
_MASK_HELP = "fixed: open each {} matrix once (fast); generic: CrypTen's Beaver products"
REGISTRY: dict[str, Spec] = {
    "plain_lr": Spec(
        "mpc_fl.protocols.plain", "CentralisedLR", "mpc_fl.models.lr:LRParams",
        "centralised LR: providers send raw features to the bank (no privacy; the accuracy ceiling)", "lr",
        _MONOTONE, reasons="plain", importance=True,
    ),
    "plain_gbdt": Spec(
        "mpc_fl.protocols.plain", "CentralisedGBDT", "mpc_fl.models.gbdt:GBDTParams",
        "centralised GBDT: providers send raw features to the bank (no privacy; the accuracy ceiling)", "gbdt",
        _MONOTONE, reasons="plain", importance=True,
    ),
    "ss_lr": Spec(
        "mpc_fl.protocols.ss_lr", "SecretSharedLR", "mpc_fl.models.lr:LRParams",
        "secret-shared logistic regression (CrypTen, triples from the dealer); only the bank learns scores", "lr",
        {
            "mask": option("fixed", _MASK_HELP.format("feature"), choices=("fixed", "generic")),
            "reveal_model": option(False, "after training, reveal each party's own weights to it (and the intercept to the bank)"),
            **_MONOTONE,
        },
        uses_crypten=True, reasons="shares", importance=True,
    ),
    "ss_gbdt": Spec(
        "mpc_fl.protocols.ss_gbdt", "SecretSharedGBDT", "mpc_fl.models.gbdt:GBDTParams",
        "secret-shared gradient-boosted trees (CrypTen, dealer); split owners public, memberships secret "
        "(oblivious=true: nothing public)", "gbdt",
        {
            "mask": option("fixed", _MASK_HELP.format("bin-indicator"), choices=("fixed", "generic")),
            "oblivious": option(False, "hide every split's owner, feature and bin and every node's rows and paths"),
            **_MONOTONE,
        },
        uses_crypten=True, reasons="shares", importance=True,
        narrower={"reg_lambda": Accepts(above=0)},  # an empty leaf would divide by zero
        excludes=(
            Excludes({"oblivious": True}, {"mask": "generic"}, "the oblivious mode routes rows with the fixed-mask bin matrices"),
        ),
    ),
    "paillier_lr": Spec(
        "mpc_fl.protocols.paillier_lr", "PaillierLR", "mpc_fl.models.lr:LRParams",
        "hetero-LR on additive HE (OU or Paillier) without arbiter (FATE/SecretFlow-style); the bank "
        "sees partial logits", "lr",
        {**_HE_OPTIONS, **_MONOTONE}, check=_HE_CHECK, reasons="shares", importance=True,
    ),
    "secureboost": Spec(
        "mpc_fl.protocols.secureboost", "SecureBoost", "mpc_fl.models.gbdt:GBDTParams",
        "SecureBoost on additive HE (OU or Paillier; FATE/SecretFlow SGB-style); the provider sees every "
        "node's customers", "gbdt",
        {**_HE_OPTIONS, **_MONOTONE}, check=_HE_CHECK, reasons="plain", importance=True,
    ),
}  # fmt: skip

_OU = {"scheme": "ou", "key_bits": 3072}
_PAILLIER = {"scheme": "paillier", "key_bits": 2048}
#: ZPaillier twins are measured, not demonstrated (nor smoke-run: their OU twins run the same code)
_MEASURED = SUITES - {"demo", "lifecycle", "smoke"}
CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("plain_lr", "plain_lr", "Plaintext LR", suites=SUITES - {"network"}),
        Case("ss_lr", "ss_lr", "SS-LR (CrypTen)", {"mask": "fixed"}),
        Case("paillier_lr_ou3072", "paillier_lr", "HE-LR, OU 3072", _OU),
        Case("paillier_lr_2048", "paillier_lr", "HE-LR, Paillier 2048", _PAILLIER, _MEASURED),
        Case("plain_gbdt", "plain_gbdt", "Plaintext GBDT", suites=SUITES - {"network"}),
        Case("ss_gbdt", "ss_gbdt", "SS-GBDT (CrypTen)", {"mask": "fixed"}),
        Case("ss_gbdt_oblivious", "ss_gbdt", "SS-GBDT oblivious", {"mask": "fixed", "oblivious": True},
             frozenset({"protocols", "smoke", "lifecycle"})),
        Case("secureboost_ou3072", "secureboost", "SecureBoost, OU 3072", _OU),
        Case("secureboost_2048", "secureboost", "SecureBoost, Paillier 2048", _PAILLIER, _MEASURED),
    )
}  # fmt: skip


def register(name: str, spec: Spec, cases: list[Case] | None = None) -> None:
    """Add a protocol (and its cases; by default one case of the same name) to the table."""
    if name in REGISTRY:
        raise ValueError(f"protocol {name!r} is registered already")
    REGISTRY[name] = spec
    for case in cases or [Case(name, name, name)]:
        CASES[case.name] = case


def cases(suite: str | None = None) -> list[Case]:
    """The cases in ``suite`` (every case if None), in the table's order."""
    if suite is not None and suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(sorted(SUITES))}")
    return [c for c in CASES.values() if suite is None or suite in c.suites]


def case(name: str) -> Case:
    if name not in CASES:
        raise ValueError(f"unknown case {name!r}; choose from {', '.join(CASES)}")
    return CASES[name]


def _text(value: Any) -> str:
    """A value as a user writes it on the command line (``true``, not ``True``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _spec(name: str) -> Spec:
    if name not in REGISTRY:
        raise ValueError(
            f"unknown protocol {name!r}; choose from {', '.join(sorted(REGISTRY))} (see `mpc-fl protocols`)"
        )
    return REGISTRY[name]


def _load(path: str):  # noqa: ANN202
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def declared(name: str) -> dict[str, Option]:
    """Every parameter of protocol ``name`` with its default, help and accepted values, hyperparameters first."""
    spec = _spec(name)
    hyper = {
        k: dataclasses.replace(o, accepts=spec.narrower.get(k, o.accepts))
        for k, o in options_of(_load(spec.params)).items()
    }
    return {**hyper, **spec.options}


def parameters(name: str) -> list[tuple[str, Any, str]]:
    """Every parameter of protocol ``name``: (key, default, one-line help), hyperparameters first."""
    return [(k, o.default, o.help) for k, o in declared(name).items()]


def describe(name: str) -> str:
    """The text ``mpc-fl protocols`` prints for one protocol."""
    spec = _spec(name)
    lines = [f"{name}: {spec.summary}"]
    lines += [
        f"    {k:<17} {_text(o.default):<9} {o.help}"
        + (f" [{o.accepts.describe()}]" if o.accepts.describe() else "")
        for k, o in declared(name).items()
    ]
    lines += [f"    not together: {_combination(x)} ({x.why})" for x in spec.excludes]
    named = [c.name for c in CASES.values() if c.protocol == name]
    lines += [f"    cases: {', '.join(named)}"] if named else []
    return "\n".join(lines)


def _combination(x: Excludes) -> str:
    return " with ".join(", ".join(f"{k}={_text(v)}" for k, v in d.items()) for d in (x.when, x.forbids))


def _typed(name: str, key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(
            f"{name}: {key} must be of type {type(default).__name__} (like {default!r}), got {value!r}"
        )
    return value


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown keys, values of the wrong type, out of range or off the choices, and incompatible
    combinations, in one line naming the parameter and what it accepts.

    Cheap (no protocol module is imported), so every process runs it before it connects.
    """
    known = declared(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"{name} has no parameter {', '.join(repr(u) for u in unknown)}; its parameters are "
            f"{', '.join(known)} (see `mpc-fl protocols {name}`)"
        )
    out = {k: _typed(name, k, v, known[k].default) for k, v in options.items()}
    spec = _spec(name)
    values = {k: out.get(k, o.default) for k, o in known.items()}
    try:
        for k, o in known.items():
            o.accepts.check(k, values[k])
        for rule in spec.excludes:
            rule.check(values)
        if "monotone" in out:
            from mpc_fl.models.monotone import parse

            parse(out["monotone"])
        if spec.check:
            _load(spec.check)({k: v for k, v in out.items() if k in spec.options and k not in LOCAL_OPTIONS})
    except ValueError as err:
        raise ValueError(f"{name}: {err} (see `mpc-fl protocols {name}`)") from None
    return out


def full_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every parameter's value for this run (defaults filled in) but the party-local ones
    (:data:`LOCAL_OPTIONS`): what the parties' handshake compares."""
    return {k: options.get(k, d) for k, d, _ in parameters(name) if k not in LOCAL_OPTIONS}


def protocol_class(name: str) -> type[VerticalProtocol]:
    spec = _spec(name)
    return getattr(importlib.import_module(spec.module), spec.cls)


def uses_crypten(name: str) -> bool:
    """Whether the protocol computes on CrypTen shares (and so needs the dealer), without importing it."""
    return _spec(name).uses_crypten


def reasons_mode(name: str) -> str:
    """How protocol ``name`` gives reason codes: "shares", "plain" or "" (:attr:`Spec.reasons`)."""
    return _spec(name).reasons


def check_reasons(name: str, reasons: int) -> None:
    """Refuse reason codes from a protocol that gives none yet, in one line, before anything connects."""
    if reasons and not reasons_mode(name):
        given = ", ".join(k for k, s in REGISTRY.items() if s.reasons)
        raise ValueError(f"--reasons: {name} gives no reason codes yet; these do: {given}")


def check_importance(name: str) -> None:
    """Refuse ``--importance`` for a protocol that reports none, in one line, before anything connects."""
    if not _spec(name).importance:
        given = ", ".join(k for k, s in REGISTRY.items() if s.importance)
        raise ValueError(f"--importance: {name} reports no feature importance; these do: {given}")


def needs_dealer(name: str, reasons: int = 0) -> bool:
    """Whether a run of ``name`` needs the dealer: it computes on shares, or ranks reasons on them."""
    return uses_crypten(name) or (reasons > 0 and reasons_mode(name) == "shares")


def make_protocol(name: str, **options: object) -> VerticalProtocol:
    """Check the options, then build the protocol (its hyperparameters or its own options: :func:`parameters`)."""
    return build_protocol(name, check_options(name, options))


def build_protocol(name: str, options: dict[str, Any]) -> VerticalProtocol:
    """Build a protocol from options :func:`check_options` already passed (a validated job's)."""
    spec = _spec(name)
    params_cls = _load(spec.params)
    fields = {f.name for f in dataclasses.fields(params_cls)}
    hyper = {k: v for k, v in options.items() if k in fields}
    extra = {k: v for k, v in options.items() if k not in fields}
    return protocol_class(name)(params_cls(**hyper), **extra)
