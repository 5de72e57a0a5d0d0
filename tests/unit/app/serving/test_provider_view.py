"""What the provider sees of an application: played as the provider, with everything it receives.

The bank's and the provider's real query code run against each other over an in-memory link; the
scoring protocol is replaced by one that records which rows it is asked to score (its own privacy
is tested with the protocols). Each attack from the review is a test, with the old decoys (drawn
afresh per query, from the training overlap only, with an error path that differs) as the
positive control that the same attack must break.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from mpc_fl.app.serving.features import FeatureStore
from mpc_fl.app.serving.service import (
    BankService,
    DecoySettings,
    ServiceSettings,
    _provider_queries,
    _Request,
)
from mpc_fl.crypto.prg import PRG
from mpc_fl.models.stability import Reference

K = 4
N_BANK = 400
TRAINING = {f"sme-{i}" for i in range(0, N_BANK, 2)}  # the overlap the provider knows from training


# ---------------------------------------------------------------------------------------------- fakes
class _Link:
    """Two parties' JSON messages over queues, as the channel carries them."""

    def __init__(self) -> None:
        self.q = {("bank", "provider"): queue.Queue(), ("provider", "bank"): queue.Queue()}

    def end(self, me: str) -> _End:
        return _End(self, me)


@dataclass
class _End:
    link: _Link
    me: str
    received: list = field(default_factory=list)

    def send_json(self, to: str, obj: object) -> None:
        self.link.q[(self.me, to)].put(json.dumps(obj))

    def recv_json(self, frm: str, timeout_s: float | None = 30) -> object:
        msg = json.loads(self.link.q[(frm, self.me)].get(timeout=timeout_s))
        self.received.append(msg)
        return msg


class _RecordingProtocol:
    def __init__(self) -> None:
        self.rows: list[int] = []
        self.X: list[np.ndarray] = []

    def decision_function(self, session: object, data: object) -> np.ndarray:
        self.rows.append(len(data.X))
        self.X.append(data.X)
        return np.zeros(len(data.X))


@dataclass
class _Model:
    protocol: _RecordingProtocol = field(default_factory=_RecordingProtocol)
    scaler: object = field(default_factory=lambda: type("Id", (), {"transform": staticmethod(lambda X: X)})())
    #: a part with a stability reference of "a" (training values 0..9, one per decile)
    part: object = field(
        default_factory=lambda: type(
            "P",
            (),
            {
                "feature_names": ["a"],
                "arrays": Reference.of(np.arange(10.0)[:, None]).to_arrays("stability.features"),
            },
        )()
    )


@dataclass
class _Session:
    channel: _End
    roles: tuple = ("bank", "provider")


def _store(path: Path, ids: list[str]) -> FeatureStore:
    with sqlite3.connect(path) as con:
        con.execute('CREATE TABLE features ("id" TEXT, "a" REAL)')
        con.executemany("INSERT INTO features VALUES (?, ?)", [(i, 1.0) for i in ids])
    return FeatureStore(path, columns=["a"])


@pytest.fixture
def stores(tmp_path):
    bank_ids = [f"sme-{i}" for i in range(N_BANK)]
    provider_ids = sorted(TRAINING | {f"sme-{i}" for i in range(1, N_BANK, 4)} | {"p-only-1", "p-only-2"})
    return tmp_path, _store(tmp_path / "bank.db", bank_ids), _store(tmp_path / "provider.db", provider_ids)


def _bank(tmp: Path, store: FeatureStore, cls: type = BankService, k: int = K, policy: str = "refuse"):
    settings = ServiceSettings(None, "bank", tmp / "bank.key", tmp / "bank.model", store)
    sets = DecoySettings(k, policy, tmp / f"sets-{k}.json")
    return cls(settings, decoys=sets, model=_Model())


def provider_view(
    bank: BankService, provider_store: FeatureStore, applications: list[list[str]], given: dict | None = None
):
    """Everything the provider receives, and the rows it scores, while the bank scores ``applications``
    (``given``: the bank's features sent with them, by id)."""
    link, model = _Link(), _Model()
    prov_end = link.end("provider")
    worker = threading.Thread(
        target=_provider_queries, args=(_Session(prov_end), model, provider_store, None)
    )
    worker.start()
    bank_session = _Session(link.end("bank"))
    answers = [bank._score_batch(bank_session, ["provider"], ids, given) for ids in applications]
    bank_session.channel.send_json("provider", {"op": "stop"})
    worker.join(10)
    assert not worker.is_alive()
    return prov_end.received[:-1], model.protocol.rows, answers


# ---------------------------------------------------------------------------------------------- mutant
class FreshDecoysBank(BankService):
    """The code the review attacked: K fresh decoys per query from the training overlap, dropped on error."""

    def _plan(self, ids: list[str]) -> tuple[list[str], dict]:
        pool = sorted(TRAINING - set(ids))
        picks = PRG.fresh().permutation(len(pool))[: K * len(ids)]
        return ids + [pool[k] for k in picks], {}


def _queried_ids(view: list) -> list[set[str]]:
    return [set(m["ids"]) for m in view if "ids" in m]


# ---------------------------------------------------------------------------------------------- attacks
@pytest.mark.parametrize("bank_cls, hides", [(BankService, True), (FreshDecoysBank, False)])
def test_intersecting_repeated_queries_leaves_at_least_k_plus_1_candidates(stores, bank_cls, hides):
    tmp, bank_store, provider_store = stores
    bank = _bank(tmp, bank_store, bank_cls)
    applicant = "sme-10"
    view, _, answers = provider_view(bank, provider_store, [[applicant]] * 3)  # a retry and another product
    assert answers[0][applicant].score is not None
    candidates = set.intersection(*_queried_ids(view))
    assert applicant in candidates
    assert (len(candidates) >= K + 1) is hides, candidates


@pytest.mark.parametrize("bank_cls, hides", [(BankService, True), (FreshDecoysBank, False)])
def test_a_new_applicant_outside_the_training_overlap_does_not_stand_out(stores, bank_cls, hides):
    """The provider guesses the one queried SME that was not in training; it should be right rarely."""
    tmp, bank_store, provider_store = stores
    bank = _bank(tmp, bank_store, bank_cls)
    newcomers = [f"sme-{i}" for i in range(1, 120, 4)]  # odd ids: never in training, served by the provider
    hits = 0
    for applicant in newcomers:
        (query,) = _queried_ids(provider_view(bank, provider_store, [[applicant]])[0])
        outside = sorted(query - TRAINING)
        hits += outside == [applicant]
    rate = hits / len(newcomers)
    # Honest: sets are drawn from all bank customers (half of them outside training), so a set rarely
    # holds the newcomer as its only outsider; the mutant's query always does.
    assert (rate < 0.3) is hides, rate


@pytest.mark.parametrize("bank_cls, hides", [(BankService, True), (FreshDecoysBank, False)])
def test_the_provider_sees_the_same_whichever_member_applied_even_one_it_lacks(stores, bank_cls, hides):
    tmp, bank_store, provider_store = stores
    bank = _bank(tmp, bank_store, bank_cls)
    anonymity = _bank(tmp, bank_store).anonymity  # the honest sets, to pick members of one set
    served = set(provider_store.ids())
    group = next(s for s in anonymity.sets if any(i not in served for i in s) and any(i in served for i in s))
    lacked, had = next(i for i in group if i not in served), next(i for i in group if i in served)
    views = {}
    for applicant in (lacked, had):
        view, rows, answers = provider_view(bank, provider_store, [[applicant]])
        views[applicant] = (sorted(map(sorted, _queried_ids(view))), rows)
        if applicant == lacked:
            assert answers[0][applicant].error == "the provider cannot score this id"
    same = views[lacked] == views[had]
    assert same is hides, views


def test_reasons_stay_with_the_provider(stores):
    tmp, bank_store, provider_store = stores
    with sqlite3.connect(provider_store.path) as con:
        con.execute('UPDATE features SET "a" = NULL WHERE "id" = ?', ("sme-20",))
    view, _, answers = provider_view(_bank(tmp, bank_store), provider_store, [["sme-20"]])
    assert answers[0]["sme-20"].error == "the provider cannot score this id"  # not which feature


def test_an_applicant_not_yet_in_a_set_is_refused_before_the_provider_hears_of_it(stores):
    tmp, bank_store, provider_store = stores
    bank = _bank(tmp, bank_store)
    bank.anonymity.set_of.pop("sme-30")  # as if the customer joined after the sets were built
    view, rows, answers = provider_view(bank, provider_store, [["sme-30"]])
    assert "refused" in answers[0]["sme-30"].error and view == [] and rows == []
    warn = _bank(tmp, bank_store, policy="warn")
    warn.anonymity.set_of.pop("sme-30")
    view, _, answers = provider_view(warn, provider_store, [["sme-30"]])
    assert answers[0]["sme-30"].score is not None and "provider learns" in answers[0]["sme-30"].warning
    assert _queried_ids(view) == [{"sme-30"}]


def test_an_id_the_bank_cannot_score_never_leaves_the_bank(stores):
    tmp, bank_store, provider_store = stores
    view, _, answers = provider_view(_bank(tmp, bank_store), provider_store, [["nobody-knows"]])
    assert view == [] and "the bank cannot score this id" in answers[0]["nobody-knows"].error


def test_decoys_zero_needs_the_warn_policy():
    with pytest.raises(ValueError, match="--decoys-policy warn"):
        DecoySettings(0, "refuse").validate()
    DecoySettings(0, "warn").validate()


def test_a_malformed_query_ends_the_session_not_the_service(stores):
    from mpc_fl.runtime.errors import ProtocolMismatchError

    _, _, provider_store = stores
    link = _Link()
    bank_end = link.end("bank")
    bank_end.send_json("provider", {"op": "score", "ids": [["not", "a", "string"]]})
    with pytest.raises(ProtocolMismatchError, match="not a short string"):
        _provider_queries(_Session(link.end("provider")), _Model(), provider_store, None)


def test_a_feature_store_error_is_answered_as_cannot_score(stores, monkeypatch):
    tmp, bank_store, provider_store = stores

    def broken(ids: list[str]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(provider_store, "rows", broken)
    view, rows, answers = provider_view(_bank(tmp, bank_store), provider_store, [["sme-10"], ["sme-12"]])
    assert all(
        a[i].error == "the provider cannot score this id"
        for a, i in zip(answers, ["sme-10", "sme-12"], strict=True)
    )
    assert rows == []


def test_the_provider_service_joins_again_after_any_error(monkeypatch):
    """Why: the provider's service once exited on any error that was not a connection error."""
    import contextlib

    import mpc_fl.app.party
    import mpc_fl.app.serving.service as service

    outcomes = iter([RuntimeError("a bad query"), ValueError("a store error"), KeyboardInterrupt()])
    joined = []

    @contextlib.contextmanager
    def session(settings: object, model: object):  # noqa: ANN202
        joined.append(1)
        yield None

    def queries(*args: object) -> None:
        raise next(outcomes)

    monkeypatch.setattr(mpc_fl.app.party, "load_model", lambda *a: _Model())
    monkeypatch.setattr(service, "_check_columns", lambda *a: None)
    monkeypatch.setattr(service, "_session", session)
    monkeypatch.setattr(service, "_provider_queries", queries)
    monkeypatch.setattr(service.time, "sleep", lambda s: None)
    with pytest.raises(KeyboardInterrupt):
        service.serve_provider(ServiceSettings(None, "provider", Path("k"), Path("m"), None))
    assert len(joined) == 3


def test_application_data_in_the_request_change_what_is_scored_not_what_the_provider_sees(stores):
    """The bank's features sent with an application replace its store's row; the provider's view is
    the same query either way, and an applicant the bank has just met (not in any anonymity set yet)
    is refused like any new customer, before the provider hears of it."""
    tmp, bank_store, provider_store = stores
    bank = _bank(tmp, bank_store)
    from_store, _, _ = provider_view(bank, provider_store, [["sme-1"]])
    given, _, answers = provider_view(bank, provider_store, [["sme-1"]], {"sme-1": np.array([7.0])})
    assert given == from_store and answers[0]["sme-1"].error is None
    scored = bank.model.protocol.X
    assert len(scored) == 2 and (scored[0] == 1.0).all()
    assert sorted(scored[1].ravel().tolist()) == [1.0] * (len(scored[1]) - 1) + [7.0]  # only its own row
    view, _, answers = provider_view(bank, provider_store, [["new-1"]], {"new-1": np.array([3.0])})
    assert "anonymity set" in answers[0]["new-1"].error and view == []


def test_the_same_id_with_other_data_waits_for_the_next_query(stores):
    """Micro-batching never scores one id with two requests' data: the second waits for the next query."""
    tmp, bank_store, _ = stores
    bank = _bank(tmp, bank_store)
    first = _Request(["sme-1"], {"sme-1": np.array([2.0])})
    same_id, other = _Request(["sme-1"]), _Request(["sme-2"])
    for r in (first, same_id, other):
        bank._requests.put(r)
    session = _Session(type("Link", (), {"broken": None})())
    assert [r is first for r in bank._next_batch(session)] == [True]
    assert [id(r) for r in bank._next_batch(session)] == [id(same_id), id(other)]


def test_a_held_query_is_answered_when_the_session_breaks(stores):
    """The query held back from a batch is failed with the queued ones, not left for the next session."""
    tmp, bank_store, _ = stores
    bank = _bank(tmp, bank_store)
    first, held = _Request(["sme-1"], {"sme-1": np.array([2.0])}), _Request(["sme-1"])
    for r in (first, held):
        bank._requests.put(r)
    bank._next_batch(_Session(type("Link", (), {"broken": None})()))
    bank._fail_pending("provider unavailable: gone")
    assert [s.error for s in held.future.result(timeout=1)] == ["provider unavailable: gone"]
    assert bank._held is None


def test_the_drift_monitor_holds_the_applicants_rows_not_the_decoys(stores):
    """The bank's window gets each scored applicant's own row once; the decoys it sent along stay out."""
    tmp, bank_store, provider_store = stores
    bank = _bank(tmp, bank_store)
    given = {f"sme-{i}": np.array([50.0]) for i in range(0, 24, 2)}  # far outside training's 0..9
    provider_view(bank, provider_store, [[i] for i in given], given)
    report = bank.stability()
    assert report["rows"] == len(given) and "a" in report["drifted"]  # decoys (a = 1.0) would dilute it
    assert report["score"] is None  # the fake part kept no score reference


class _LeakyApplicationsBank(BankService):
    """A mutant that adds the application data it was given to the query it sends the provider."""

    def _score_batch(self, session, providers, ids, given=None):  # noqa: ANN001, ANN202
        send = session.channel.send_json

        def leaky(to: str, obj: object) -> None:
            if given and isinstance(obj, dict) and obj.get("op") == "score":
                obj = {**obj, "given": {i: v.tolist() for i, v in given.items()}}
            send(to, obj)

        session.channel.send_json = leaky
        try:
            return super()._score_batch(session, providers, ids, given)
        finally:
            session.channel.send_json = send


def test_positive_control_a_bank_that_forwards_application_data_changes_the_providers_view(stores):
    tmp, bank_store, provider_store = stores
    bank = _bank(tmp, bank_store, cls=_LeakyApplicationsBank)
    from_store, _, _ = provider_view(bank, provider_store, [["sme-1"]])
    given, _, _ = provider_view(bank, provider_store, [["sme-1"]], {"sme-1": np.array([7.0])})
    assert given != from_store  # the same comparison the honest test makes, here flagging the leak
