"""The scoring service: loan applications scored in milliseconds with a saved joint model.

Bank, provider(s) and dealer each start once and keep their authenticated links open; the bank
then scores applications as they come, through :meth:`BankService.score` (Python) or the HTTP
endpoint of :mod:`mpc_fl.app.serving.http`.

Per query (one application or a micro-batch of them):

1. the bank looks up its own features of the ids; an id it cannot score never leaves the bank;
2. it sends each provider the ids to score: every applicant's whole anonymity set
   (:mod:`mpc_fl.app.serving.decoys`), so the provider learns that one of at least ``k + 1`` SMEs
   applied, and the same set whichever of them it was, however often it is asked;
3. each provider reads those ids from its own feature store and answers which ones it cannot
   score, without saying why (the reason stays in its own log);
4. the bank tells every provider which rows are scored: the query minus every provider's
   "cannot" (with one provider, exactly what it already knows; with several, each learns the
   others' "cannot" within the set, a function of the set, not of the applicant);
5. all parties run the protocol's scoring on those rows; the bank alone learns the logits and
   applies the sigmoid itself. The rows do not depend on which member applied, so a real
   applicant the provider lacks and a decoy it lacks look the same to it.

Failures stay per query: an id the bank or a provider cannot score is an error for that id
("cannot score this id", never which feature is missing); a provider that goes away fails the
queries in flight, and the bank joins the federation again in the background (the provider's
and dealer's services do the same, after any failure), answering "provider unavailable"
meanwhile; a provider that comes back with another model part is refused by the handshake
(model fingerprint), with that reason. This module knows the protocol interface, not its insides.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpc_fl.app.serving.decoys import DECOY_POLICIES, DEFAULT_DECOYS, REVEALS, AnonymitySets
from mpc_fl.app.serving.features import MAX_ID_CHARS, FeatureStore
from mpc_fl.models.stability import WARN, Reference, Window
from mpc_fl.protocols.base import BANK, LocalData
from mpc_fl.runtime.errors import ProtocolMismatchError
from mpc_fl.runtime.federation import Federation

log = logging.getLogger(__name__)

#: How long a service waits for the next query before it checks whether it should stop.
IDLE_WAIT_S = 1.0
#: A service waits this long for its next query (a service idles between applications).
SERVICE_OP_TIMEOUT_S = 10.0**9
#: The most ids a provider accepts in one query (a micro-batch of applicants with their sets).
MAX_QUERY_IDS = 200_000
#: The answer for an id some party cannot score: which party, not why.
CANNOT_SCORE = "{who} cannot score this id"


class ScoringError(RuntimeError):
    """One query could not be scored; the message says why (unknown id, provider unavailable...)."""


@dataclass(frozen=True)
class DecoySettings:
    """How the bank hides each applicant from the providers (validated before anything connects)."""

    k: int = DEFAULT_DECOYS
    policy: str = "refuse"
    #: The bank's anonymity sets; default: beside the bank's key.
    sets_file: Path | None = None

    def validate(self) -> None:
        if self.k < 0:
            raise ValueError(f"--decoys must be 0 or more, got {self.k}")
        if self.policy not in DECOY_POLICIES:
            raise ValueError(
                f"--decoys-policy must be one of {', '.join(DECOY_POLICIES)}, got {self.policy!r}"
            )
        if self.k == 0 and self.policy == "refuse":
            raise ValueError(
                "--decoys 0 shows the provider every applicant; pass --decoys-policy warn to accept that"
            )


# ---------------------------------------------------------------------------------------------- sessions
@dataclass
class ServiceSettings:
    fed: Federation
    role: str
    key: Path
    model_path: Path
    store: FeatureStore
    listen: tuple[str, int] | None = None
    quiet: bool = True
    #: the top R reasons per application (0: none) and the outcome they argue for; every party says the same
    reasons: int = 0
    adverse: str = "y1"
    #: rows of the drift monitor (:class:`mpc_fl.models.stability.Window`): the last this many scored
    stability_window: int = 1000


def _window(model: Any, size: int, with_score: bool) -> Window:
    """This party's drift monitor, against the training reference its part kept."""
    arrays = model.part.arrays
    score = Reference.from_arrays(arrays, "stability.score") if with_score else None
    features = Reference.from_arrays(arrays, "stability.features")
    return Window(size, tuple(model.part.feature_names), features, score)


def _warn_drift(window: Window, before: int, who: str) -> None:
    """Log, once per window's worth of rows, the features (and score) whose index is past the warning line."""
    if window.added // window.size == before // window.size:
        return
    found = window.report()
    if found["drifted"]:
        log.warning(
            "%s: population stability index past %.2f over the last %d scored rows: %s",
            who, WARN, found["rows"], ", ".join(found["drifted"]),
        )  # fmt: skip


def _session(settings: ServiceSettings, model: Any):  # noqa: ANN202 - a context manager of PartySession
    from mpc_fl.protocols import needs_dealer
    from mpc_fl.runtime.session import connect

    hello = {
        "mode": "serve", "protocol": model.part.protocol, "model": model.part.fingerprint,
        "reasons": [settings.reasons, settings.adverse],
    }  # fmt: skip
    return connect(
        settings.fed, settings.role, settings.key,
        uses_crypten=needs_dealer(model.part.protocol, settings.reasons),
        listen=settings.listen, hello=hello, quiet=settings.quiet,
    )  # fmt: skip


def _check_columns(model: Any, store: FeatureStore) -> None:
    if store.columns != model.part.feature_names:
        raise ValueError(
            f"the feature store has columns {store.columns}, the model was trained on {model.part.feature_names}"
        )


def serve_provider(
    settings: ServiceSettings, *, forever: bool = True, on_query: Callable[[int], None] | None = None
) -> None:
    """A provider's service: join, answer the bank's queries from the feature store; join again after any failure.

    Why any: the service must outlive one bad query or session (a malformed request, a store
    error, a peer that leaves mid-protocol); a bad model or store fails before the loop, at start.
    """
    from mpc_fl.app.party import load_model
    from mpc_fl.protocols import check_reasons

    model = load_model(settings.model_path, settings.role)
    _check_columns(model, settings.store)
    if settings.reasons:
        check_reasons(model.part.protocol, settings.reasons)
    while True:
        try:
            with _session(settings, model) as session:
                _provider_queries(
                    session, model, settings.store, on_query, (settings.reasons, settings.adverse),
                    settings.stability_window,
                )  # fmt: skip
            if not forever:
                return
        except Exception as err:  # noqa: BLE001 - the service outlives any one session
            if not forever:
                raise
            log.warning(
                "session ended (%s); joining again", str(err).splitlines()[0] if str(err) else repr(err)
            )
            time.sleep(1.0)


def _query_ids(msg: object, key: str = "ids") -> list[str]:
    """The ids of a bank's message, checked: a malformed message ends the session, never the service."""
    ids = msg.get(key) if isinstance(msg, dict) else None
    if not isinstance(ids, list) or len(ids) > MAX_QUERY_IDS:
        raise ProtocolMismatchError(f"the bank's query is malformed or larger than {MAX_QUERY_IDS:,} ids")
    if not all(isinstance(i, str) and len(i) <= MAX_ID_CHARS for i in ids):
        raise ProtocolMismatchError("the bank's query holds an id that is not a short string")
    return ids


def _provider_queries(
    session: Any,
    model: Any,
    store: FeatureStore,
    on_query: Callable[[int], None] | None,
    reasons: tuple[int, str] = (0, "y1"),
    window_rows: int = 1000,
) -> None:
    """Answer the bank's queries until it stops; ``reasons``: (R, adverse) as the service was started;
    ``window_rows``: the drift monitor's rows (a warning in this party's log past the line)."""
    ch = session.channel
    n = 0
    window = _window(model, window_rows, with_score=False)  # decoys included: the provider cannot tell
    while True:
        msg = ch.recv_json(BANK, timeout_s=SERVICE_OP_TIMEOUT_S)
        if isinstance(msg, dict) and msg.get("op") == "stop":
            return
        ids = _query_ids(msg)
        try:
            X, problems = store.rows(ids)
        except Exception as err:  # noqa: BLE001 - a store error is this query's, not the service's
            log.warning("feature store failed for a query of %d ids: %s", len(ids), err)
            X, problems = np.zeros((len(ids), len(store.columns))), dict.fromkeys(ids, "feature store error")
        for why in sorted(set(problems.values())):  # reasons stay here, in the provider's own log
            log.info("cannot score %d id(s) of this query: %s", sum(v == why for v in problems.values()), why)
        ch.send_json(BANK, {"cannot": [i for i in ids if i in problems]})
        run = ch.recv_json(BANK)
        drop = set(_query_ids(run, "drop"))
        explained = run.get("explain", 0) if isinstance(run, dict) else 0
        if not isinstance(explained, int) or not 0 <= explained <= len(ids):
            raise ProtocolMismatchError("the bank asked for reasons of more rows than it queried")
        if not problems.keys() <= drop:
            raise ProtocolMismatchError("the bank asked to score rows this provider cannot score")
        keep = [k for k, i in enumerate(ids) if i not in drop]
        if not keep:
            continue
        data = LocalData(model.scaler.transform(X[keep]))
        before = window.added
        window.add(X[keep])
        _warn_drift(window, before, "provider")
        model.protocol.decision_function(session, data)
        if reasons[0] and explained:
            from mpc_fl.app.party import explain

            explain(session, model, data, *reasons, n_rows=explained)
        n += 1
        if on_query:
            on_query(n)


class _NoPrefetch:
    """Stands in for a dealer prefetch where there is no dealer (reasons in the clear)."""

    @contextlib.contextmanager
    def block(self, name: str) -> Iterator[None]:
        yield


@dataclass
class _Request:
    ids: list[str]
    #: the bank's features given with the request, by id (they replace its store's row)
    applications: dict[str, np.ndarray] = field(default_factory=dict)
    future: Future = field(default_factory=Future)

    def conflicts(self, other: _Request) -> bool:
        """Whether one query cannot serve both: an id given with its own data in one of them and in the other."""
        mine, theirs = set(self.ids), set(other.ids)
        return bool(set(self.applications) & theirs or set(other.applications) & mine)


@dataclass
class Scored:
    """The answer for one application id: a probability, or why there is none; and what it revealed."""

    id: str
    score: float | None = None
    error: str | None = None
    #: Set when scoring this id showed the provider who applied (``--decoys-policy warn``).
    warning: str | None = None
    #: with reason codes: the top reasons, strongest first: (unit name, contribution toward adverse)
    reasons: list[tuple[str, float]] | None = None


class BankService:
    """The bank's side of the scoring service (thread-safe; runs its federation session in a thread)."""

    def __init__(
        self, settings: ServiceSettings, *, decoys: DecoySettings | None = None, max_batch: int = 256,
        model: Any = None,
    ):  # fmt: skip
        """``model``: the bank's loaded part when the caller has it (else it is read from ``settings``)."""
        from mpc_fl.app.party import load_model

        self.decoys = decoys or DecoySettings()
        self.decoys.validate()
        self.settings = settings
        self.model = load_model(settings.model_path, BANK) if model is None else model
        if model is None:
            _check_columns(self.model, settings.store)
        if settings.reasons:
            from mpc_fl.protocols import check_reasons

            check_reasons(self.model.part.protocol, settings.reasons)
        self.max_batch = int(max_batch)
        self.anonymity: AnonymitySets | None = None
        if self.decoys.k:
            sets_file = self.decoys.sets_file or Path(settings.key).with_name(f"{BANK}.anonymity-sets.json")
            self.anonymity = AnonymitySets.open(sets_file, self.decoys.k, settings.store.ids())
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._held: _Request | None = None  # a query that could not join the last batch
        self.window = _window(self.model, settings.stability_window, with_score=True)  # applicants only
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._batch_started: float | None = None
        self.last_error: str | None = None
        self.session: Any = None
        self._thread = threading.Thread(target=self._run, name="bank-service", daemon=True)

    # ------------------------------------------------------------------ public API
    def start(self, timeout_s: float | None = None) -> BankService:
        """Join the federation in the background; with ``timeout_s``, wait until ready (or raise why not)."""
        self._thread.start()
        if timeout_s is not None and not self._ready.wait(timeout_s):
            raise ScoringError(f"the scoring service is not ready after {timeout_s:.0f} s: {self.last_error}")
        return self

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def stability(self) -> dict:
        """The drift monitor: the bank's features' and the score's stability index over the last
        applications scored (their own rows, not the decoys'), against training."""
        return self.window.report()

    @property
    def busy_s(self) -> float:
        """How long the batch being scored has taken so far (0 when idle): a stuck service shows here."""
        started = self._batch_started
        return 0.0 if started is None else time.monotonic() - started

    def score(
        self,
        ids: list[str] | str,
        timeout_s: float = 60.0,
        applications: dict[str, np.ndarray] | None = None,
    ) -> list[Scored]:
        """Score one application id (or a small batch); errors are per id, the service keeps running.

        ``applications``: the bank's features of some of these ids, given with the request
        (:func:`~mpc_fl.app.serving.features.application_rows`), used instead of its store's row;
        the providers still read their own features by id and see the same query either way.
        """
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        applications = dict(applications or {})
        width = len(self.settings.store.columns)
        for i, row in applications.items():
            if i not in ids:
                raise ValueError(f"application {i!r} is not among the ids to score")
            if np.shape(row) != (width,) or not np.isfinite(row).all():
                raise ValueError(f"application {i!r}: {width} finite feature values expected")
        if not self._ready.is_set():
            why = self.last_error or "the parties are still connecting"
            return [Scored(i, error=f"provider unavailable: {why}") for i in ids]
        request = _Request(ids, applications)
        self._requests.put(request)
        return request.future.result(timeout=timeout_s)

    def stop(self) -> None:
        """Tell the providers and the dealer the service ends, then leave."""
        self._stop.set()
        self._requests.put(None)
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ session thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with _session(self.settings, self.model) as session:
                    self.session = session
                    self.last_error = None
                    self._ready.set()
                    self._serve(session)
                return
            except Exception as err:  # noqa: BLE001 - the service outlives any one session
                self._ready.clear()
                self.last_error = str(err).splitlines()[0] if str(err) else type(err).__name__
                self._fail_pending(f"provider unavailable: {self.last_error}")
                time.sleep(1.0)

    def _fail_pending(self, why: str) -> None:
        """Answer every waiting query with ``why``, the one held back from the last batch first."""
        held, self._held = self._held, None
        if held is not None:
            held.future.set_result([Scored(i, error=why) for i in held.ids])
        while True:
            try:
                r = self._requests.get_nowait()
            except queue.Empty:
                return
            if r is not None:
                r.future.set_result([Scored(i, error=why) for i in r.ids])

    def _next_batch(self, session: Any) -> list[_Request] | None:
        """Wait for a query; take every query already waiting too (micro-batching), up to max_batch ids.

        While idle, a link that went down (a provider or the dealer stopped) ends the session, so the
        service joins again before the next application arrives.
        """
        first, self._held = self._held, None
        while first is None:
            try:
                first = self._requests.get(timeout=IDLE_WAIT_S)
                if first is None:
                    return None
            except queue.Empty:
                if self._stop.is_set():
                    return None
                if session.channel.broken is not None:
                    raise session.channel.broken from None
        batch, n = [first], len(first.ids)
        while n < self.max_batch:
            try:
                r = self._requests.get_nowait()
            except queue.Empty:
                break
            if r is None:
                self._requests.put(None)
                break
            if any(r.conflicts(b) for b in batch):  # the same id with other data: the next query
                self._held = r
                break
            batch.append(r)
            n += len(r.ids)
        return batch

    def _serve(self, session: Any) -> None:
        providers = [r for r in session.roles if r != BANK]
        while True:
            batch = self._next_batch(session)
            if batch is None:
                for p in providers:
                    session.channel.send_json(p, {"op": "stop"})
                return
            self._batch_started = time.monotonic()
            try:
                given = {i: row for r in batch for i, row in r.applications.items()}
                results = self._score_batch(session, providers, [i for r in batch for i in r.ids], given)
            except Exception as err:
                self._ready.clear()  # before anyone hears of it: the next query waits for the new session
                why = f"provider unavailable: {str(err).splitlines()[0]}"
                for r in batch:
                    r.future.set_result([Scored(i, error=why) for i in r.ids])
                raise
            finally:
                self._batch_started = None
            for r in batch:
                r.future.set_result([results[i] for i in r.ids])

    def _prefetch(self, session: Any):  # noqa: ANN202 - a DealerPrefetch, or a block that does nothing
        """This session's dealer prefetch: a query of a size seen before asks the dealer for all of its
        reasons' correlations in one request (:mod:`mpc_fl.crypto.prefetch`; the same list, earlier)."""
        if getattr(self, "_prefetch_session", None) is not session:
            from mpc_fl.protocols import needs_dealer

            if needs_dealer(self.model.part.protocol, self.settings.reasons):
                from mpc_fl.crypto.prefetch import DealerPrefetch

                self._prefetcher = DealerPrefetch()
            else:
                self._prefetcher = _NoPrefetch()
            self._prefetch_session = session
        return self._prefetcher

    def _plan(self, ids: list[str]) -> tuple[list[str], dict[str, Scored]]:
        """The query for these applicants (their anonymity sets), and the answers of those it must not send."""
        if self.anonymity is None:  # --decoys 0, policy warn: every id goes alone
            return ids, {}
        hidden = [i for i in ids if self.anonymity.covers(i)]
        exposed = [i for i in ids if not self.anonymity.covers(i)]
        if exposed and self.decoys.policy == "refuse":
            why = (
                "refused: not yet in an anonymity set (a customer new since the sets were built), "
                "so scoring it would show the provider that this SME applied"
            )
            log.warning("refused %d application(s) that would reveal the applicant", len(exposed))
            return self.anonymity.query(hidden), {i: Scored(i, error=why) for i in exposed}
        if exposed:
            log.warning(
                "scored %d application(s) the provider can single out (--decoys-policy warn)", len(exposed)
            )
        return self.anonymity.query(hidden) + exposed, {}

    def _score_batch(
        self, session: Any, providers: list[str], ids: list[str], given: dict[str, np.ndarray] | None = None
    ) -> dict[str, Scored]:
        """Score the distinct ``ids`` with their anonymity sets; an id some party cannot score gets an error.

        ``given``: the bank's features of applications that came with their data; they replace
        its store's rows (read with the others, then overwritten), and a row its store lacks or
        cannot serve is no error for them."""
        given = given or {}
        real = list(dict.fromkeys(ids))
        _, own = self.settings.store.rows(real)  # what the bank cannot score never leaves the bank
        own = {i: why for i, why in own.items() if i not in given}
        results = {
            i: Scored(i, error=CANNOT_SCORE.format(who="the bank") + f" ({why})") for i, why in own.items()
        }
        query, refused = self._plan([i for i in real if i not in own])
        results |= refused
        if not query:
            return results
        for p in providers:
            session.channel.send_json(p, {"op": "score", "ids": query})
        cannot: dict[str, str] = {}
        for p in providers:
            for i in _query_ids(session.channel.recv_json(p), "cannot"):
                cannot.setdefault(i, p)
        drop = [i for i in query if i in cannot]
        results |= {
            i: Scored(i, error=CANNOT_SCORE.format(who=f"the {cannot[i]}")) for i in real if i in cannot
        }
        rows = [i for i in query if i not in cannot]
        wanted = set(real)
        # the applicants' own rows among the decoys: reasons are ranked for these only (the bank's secret)
        applicants = [k for k, i in enumerate(rows) if i in wanted and i not in results]
        explained = len(applicants) if self.settings.reasons else 0
        for p in providers:
            session.channel.send_json(p, {"op": "run", "drop": drop, "explain": explained})
        if not rows:
            return results
        X, _ = self.settings.store.rows(rows)  # a decoy the bank lacks scores as zeros, never read
        for k, i in enumerate(rows):
            if i in given:
                X[k] = given[i]
        data = LocalData(self.model.scaler.transform(X))
        z = self.model.protocol.decision_function(session, data)
        reasons = None
        if explained:
            from mpc_fl.app.party import explain

            with self._prefetch(session).block(f"reasons:{len(rows)}:{explained}"):
                chosen = explain(
                    session, self.model, data, self.settings.reasons, self.settings.adverse,
                    rows=np.asarray(applicants),
                )  # fmt: skip
            reasons = {rows[k]: chosen.of(j) for j, k in enumerate(applicants)}
        p_all = 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))
        mine = [k for k, i in enumerate(rows) if i in wanted and i not in results]  # not the decoys
        before = self.window.added
        self.window.add(X[mine], p_all[mine])
        _warn_drift(self.window, before, "bank")
        for i, p in zip(rows, p_all, strict=True):
            if i in wanted and i not in results:
                hidden = self.anonymity is not None and self.anonymity.covers(i)
                why = None if reasons is None else reasons[i]
                results[i] = Scored(i, score=float(p), warning=None if hidden else REVEALS, reasons=why)
        return results
