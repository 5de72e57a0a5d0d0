"""The contract every registered case keeps, parametrised over the one table of cases.

Only the bank gets scores; the same public seed gives the same model; a party's exported part,
imported into a fresh protocol, scores exactly as the model in memory; bad parameters are refused
before anything connects; the declared threat model and leakage name every role, and the README's
security table is generated from them. ``test_toy_protocol.py`` runs these same checks on a
protocol registered from the tests, with no other change.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import pytest

from mpc_fl.app.security_table import README, readme_block, security_table
from mpc_fl.crypto.paillier import allow_short_keys_for_tests
from mpc_fl.protocols import REGISTRY, case, cases, check_options, declared, make_protocol, protocol_class
from mpc_fl.protocols.base import BANK, LocalData
from mpc_fl.runtime.local import run_in_threads, run_local

N_TRAIN, N_TEST = 240, 60
#: fixed-point truncation noise of the CrypTen protocols' scores; every other protocol is exact
SS_TOLERANCE = 2e-3


def _data(role: str) -> tuple[LocalData, LocalData]:
    """This party's own columns of a small public problem (the bank holds the labels)."""
    gen = np.random.default_rng(11)
    n = N_TRAIN + N_TEST
    xb, xp = gen.normal(size=(n, 2)), gen.normal(size=(n, 3))
    y = ((xb[:, 0] + xp[:, 1] - 0.5 * xp[:, 2] + gen.normal(size=n)) > 0).astype(np.int64)
    X = xb if role == BANK else xp
    names = tuple(f"{role}_{j}" for j in range(X.shape[1]))
    train = LocalData(X[:N_TRAIN], y[:N_TRAIN] if role == BANK else None, names)
    return train, LocalData(X[N_TRAIN:], None, names)


@contextlib.contextmanager
def _fast_keys(options: dict) -> Iterator[dict]:
    """The HE cases with 1024-bit keys (test-only) so the suite stays fast; the others unchanged."""
    if "key_bits" not in options:
        yield options
        return
    with allow_short_keys_for_tests():
        yield {**options, "key_bits": 1024}


def _fit_export_import_refit(name: str) -> dict[str, dict]:
    """Each party: fit, score, export its part, import it into a fresh protocol, score, fit again."""
    c = case(name)
    with _fast_keys(c.settings("smoke")) as options:

        def party(session) -> dict:  # noqa: ANN001 - a PartySession
            train, test = _data(session.role)
            first = make_protocol(c.protocol, **options)
            first.fit(session, train)
            scores = first.predict_proba(session, test)
            meta, arrays = first.export_state()
            restored = make_protocol(c.protocol, **options)
            restored.import_state(meta, arrays)
            again = make_protocol(c.protocol, **options)
            again.fit(session, train)
            return {
                "scores": scores,
                "restored": restored.predict_proba(session, test),
                "refit": again.predict_proba(session, test),
            }

        if REGISTRY[c.protocol].uses_crypten:
            out = run_local(party, uses_crypten=True, dealer=True, timeout_s=600)
            return {role: r["result"] for role, r in out.items() if role != "dealer"}
        # no CrypTen: threads, since a child forked from this process after HEU's thread pool ran
        # (an earlier test) can wait forever on its locks; real parties are fresh processes
        out = run_in_threads(party, (BANK, "provider"), timeout_s=600)
        return {role: r[0] if isinstance(r, tuple) else r for role, r in out.items()}


def check_scores_export_and_seed(name: str) -> None:
    results = _fit_export_import_refit(name)
    bank = results.pop(BANK)
    assert bank["scores"] is not None and len(bank["scores"]) == N_TEST
    assert all(r[k] is None for r in results.values() for k in r), "only the bank may get scores"
    tol = SS_TOLERANCE if REGISTRY[case(name).protocol].uses_crypten else 1e-9
    np.testing.assert_allclose(bank["restored"], bank["scores"], atol=tol, err_msg="export/import round trip")
    np.testing.assert_allclose(
        bank["refit"], bank["scores"], atol=tol, err_msg="same public seed, same model"
    )


def _bad_values(name: str) -> Iterator[tuple[dict, str]]:
    """For every declared parameter, a value it refuses (below, above, off its choices), and an unknown key."""
    for key, opt in declared(case(name).protocol).items():
        a = opt.accepts
        if a.choices:
            yield {key: f"not-{a.choices[0]}"}, key
        low = a.above if a.above is not None else (a.at_least - 1 if a.at_least is not None else None)
        if low is not None:
            yield {key: type(opt.default)(low)}, key
        if a.at_most is not None:
            yield {key: type(opt.default)(a.at_most + 1)}, key
    yield {"no_such_parameter": 1}, "no_such_parameter"
    for rule in REGISTRY[case(name).protocol].excludes:
        yield {**rule.when, **rule.forbids}, "cannot be combined"


def check_bad_parameters_refused(name: str) -> None:
    c = case(name)
    for bad, named in _bad_values(name):
        with pytest.raises(ValueError, match=named) as err:
            check_options(c.protocol, {**c.options, **bad})
        assert "\n" not in str(err.value)


def check_run_refuses_before_connecting(name: str, tmp_path, capfd) -> None:  # noqa: ANN001
    """``mpc-fl run`` with a bad parameter exits 2 in one line, before any process starts."""
    from mpc_fl.app.cli import main

    bad, _ = next(_bad_values(name))
    ((key, value),) = bad.items()
    out = tmp_path / "runs"
    argv = ["run", "--bank", "b.csv", "--provider", "p.csv", "--protocol", case(name).protocol,
            "--param", f"{key}={value}", "--out-dir", str(out)]  # fmt: skip
    capfd.readouterr()
    t0 = time.monotonic()
    code = main(argv)
    assert code == 2 and time.monotonic() - t0 < 5.0
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and key in err, err
    assert not out.exists()  # nothing was started: no run folder, no keys, no logs


def check_declarations_name_every_role(name: str) -> None:
    c = case(name)
    proto = make_protocol(c.protocol, **c.settings())
    roles = {"bank", "provider"} | ({"dealer"} if REGISTRY[c.protocol].uses_crypten else set())
    assert proto.threat_model.strip()
    assert set(proto.leakage) == roles, (
        f"{name} declares leakage for {sorted(proto.leakage)}, not {sorted(roles)}"
    )
    assert all(text.strip() for text in proto.leakage.values())
    assert protocol_class(c.protocol).name == c.protocol


NAMES = [c.name for c in cases()]


@pytest.mark.parametrize("name", NAMES)
def test_only_the_bank_scores_and_parts_round_trip_and_seeds_repeat(name: str) -> None:
    check_scores_export_and_seed(name)


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameters_are_refused_in_one_line(name: str) -> None:
    check_bad_parameters_refused(name)


@pytest.mark.parametrize("name", NAMES)
def test_run_refuses_a_bad_parameter_before_connecting(name: str, tmp_path, capfd) -> None:  # noqa: ANN001
    check_run_refuses_before_connecting(name, tmp_path, capfd)


@pytest.mark.parametrize("name", NAMES)
def test_threat_model_and_leakage_name_every_role(name: str) -> None:
    check_declarations_name_every_role(name)


def test_the_readme_security_table_is_generated_from_the_declarations() -> None:
    assert readme_block(README.read_text()) == security_table(), (
        "README.md's security table is stale: run `python -m mpc_fl.app.security_table`"
    )


def test_the_table_check_has_teeth(monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive control: a protocol that declares less than it reveals changes the generated table."""
    from mpc_fl.protocols.secureboost import SecureBoost

    honest = security_table()
    monkeypatch.setattr(SecureBoost, "leakage", {"bank": "nothing", "provider": "nothing"})
    assert security_table() != honest


def test_one_default_setting_per_family_is_the_models_default() -> None:
    from mpc_fl.models.params import options_of
    from mpc_fl.protocols import FAMILIES

    for family, params in (("lr", "LRParams"), ("gbdt", "GBDTParams")):
        module = __import__(f"mpc_fl.models.{family}", fromlist=[params])
        defaults = {k: o.default for k, o in options_of(getattr(module, params)).items()}
        assert FAMILIES[family]["default"].items() <= defaults.items(), family
