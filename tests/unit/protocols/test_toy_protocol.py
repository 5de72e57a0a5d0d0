"""Adding a protocol takes its module, one registry entry and its tests: shown with a toy.

The toy (``toy.py``) is registered here only, for the length of each test; with that one entry it
is listed by the CLI, it is one of the benchmarks' smoke cases, and it passes the contract suite.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_contract import (
    check_bad_parameters_refused,
    check_declarations_name_every_role,
    check_run_refuses_before_connecting,
    check_scores_export_and_seed,
)

from mpc_fl import protocols
from mpc_fl.protocols import Case, Spec

TOY = "bank_only_lr"


@pytest.fixture()
def toy() -> Iterator[str]:
    """The toy's one registry entry (undone after the test)."""
    protocols.register(
        TOY,
        Spec("tests.unit.protocols.toy", "BankOnlyLR", "mpc_fl.models.lr:LRParams",
             "toy: the bank trains on its own features only (nothing crosses)", "lr"),
        [Case(TOY, TOY, "Bank-only LR (toy)", suites=frozenset({"protocols"}))],
    )  # fmt: skip
    yield TOY
    del protocols.REGISTRY[TOY], protocols.CASES[TOY]


def test_the_cli_lists_it(toy: str) -> None:
    from mpc_fl.app.cli import build_parser, main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["protocols"]) == 0
    assert f"{toy}: toy: the bank trains" in out.getvalue() and "learning_rate" in out.getvalue()
    assert toy in build_parser()._subparsers._group_actions[0].choices["run"].format_help()


def test_it_is_one_of_the_benchmarks_smoke_cases(toy: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    try:
        import _bench
    finally:
        sys.path.pop(0)
    assert toy in _bench.suite("protocols")
    assert _bench.options(toy, smoke=True) == (toy, protocols.FAMILIES["lr"]["smoke"])


def test_it_passes_the_contract(toy: str, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    check_declarations_name_every_role(toy)
    check_bad_parameters_refused(toy)
    check_run_refuses_before_connecting(toy, tmp_path, capfd)
    check_scores_export_and_seed(toy)


def test_registering_a_name_twice_is_refused(toy: str) -> None:
    with pytest.raises(ValueError, match="registered already"):
        protocols.register(toy, protocols.REGISTRY[toy])


def test_reasons_from_a_protocol_without_them_are_refused_by_name(toy: str) -> None:
    """A new protocol gives no reason codes until its entry says how: asking is one line naming those that do."""
    with pytest.raises(
        ValueError, match=rf"--reasons: {toy} gives no reason codes yet; these do: plain_lr, "
    ):
        protocols.check_reasons(toy, 3)
    protocols.check_reasons(toy, 0)  # no reasons asked: nothing to refuse
