"""The scoring service: single loan applications scored in milliseconds with a saved joint model.

Bank, provider(s) and dealer each start once and keep their authenticated links open; the
bank then scores applications as they come, through :meth:`BankService.score` (Python) or a
small HTTP endpoint on the bank's machine (``POST /score {"ids": [...]}``, ``GET /health``).

Per query (one application or a micro-batch):

1. the bank looks up its own features of the ids in its feature store;
2. it sends each provider the ids to score (the provider learns *that these SMEs applied*;
   with ``decoys=k`` every real id travels with ``k`` decoys drawn from the bank's customers
   the provider also serves, so the provider only learns that one of ``k + 1`` SMEs applied);
3. each provider reads its features by id from its own feature store (SQLite by default,
   :class:`FeatureStore`) and answers ``ok`` or which ids it does not have;
4. all parties run the protocol's scoring on those rows; the bank alone learns the logits
   and applies the sigmoid itself (no sigmoid under encryption).

Failures stay per query: an id unknown at the bank or at a provider, or a missing feature,
is an error for that id; a provider that goes away fails the queries in flight, and the
bank joins the federation again in the background (the provider's and dealer's services do
the same), answering "provider unavailable" meanwhile; a provider that comes back with
another model part is refused by the handshake (model fingerprint), with that reason.
This module sits above the pipeline: it knows the protocol interface, not its insides.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from mpc_fl.crypto.prg import PRG
from mpc_fl.protocols.base import BANK, LocalData
from mpc_fl.runtime.errors import PartyConnectionError, ProtocolMismatchError
from mpc_fl.runtime.federation import Federation

log = logging.getLogger(__name__)

#: How long a service waits for the next query before it checks whether it should stop.
IDLE_WAIT_S = 1.0
#: A service waits this long for its next query (a service idles between applications).
SERVICE_OP_TIMEOUT_S = 10.0**9


class ScoringError(RuntimeError):
    """One query could not be scored; the message says why (unknown id, provider unavailable...)."""


# ---------------------------------------------------------------------------------------------- features
class FeatureStore:
    """A party's own features by customer id, in an SQLite table (one row per id, one column per feature).

    Point it at a real table (``table``, ``id_col``, ``columns``) or build one from the party's
    CSV with :meth:`from_csv`. Only the owning party ever opens it.
    """

    def __init__(self, path: Path, *, table: str = "features", id_col: str = "id", columns: list[str]):
        self.path, self.table, self.id_col, self.columns = Path(path), table, id_col, list(columns)
        self._local = threading.local()
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such feature store")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        return db

    @classmethod
    def from_csv(
        cls, csv: Path, db: Path, *, id_col: str = "id", drop: tuple[str, ...] = ("y",)
    ) -> FeatureStore:
        """Load a party's CSV (validated like any party file) into a fresh SQLite table ``features``."""
        import pandas as pd

        frame = pd.read_csv(csv, dtype={id_col: str})
        columns = [c for c in frame.columns if c != id_col and c not in drop]
        db = Path(db)
        db.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(db)) as con:
            frame[[id_col, *columns]].to_sql("features", con, index=False)
            con.execute(f'CREATE UNIQUE INDEX idx_id ON features("{id_col}")')
            con.commit()
        return cls(db, id_col=id_col, columns=columns)

    def rows(self, ids: list[str]) -> tuple[np.ndarray, dict[str, str]]:
        """Features of ``ids`` in that order, and for each id that cannot be served, why."""
        cols = ", ".join(f'"{c}"' for c in [self.id_col, *self.columns])
        marks = ", ".join("?" * len(ids))
        found = {
            str(r[0]): r[1:]
            for r in self._db().execute(
                f'SELECT {cols} FROM "{self.table}" WHERE "{self.id_col}" IN ({marks})', ids
            )
        }
        problems = {}
        X = np.zeros((len(ids), len(self.columns)))
        for i, id_ in enumerate(ids):
            row = found.get(id_)
            if row is None:
                problems[id_] = "unknown id"
            elif any(v is None for v in row):
                missing = [c for c, v in zip(self.columns, row, strict=True) if v is None]
                problems[id_] = f"missing feature(s) {', '.join(missing)}"
            else:
                try:
                    X[i] = np.asarray(row, dtype=np.float64)
                except ValueError:
                    problems[id_] = "a non-numeric feature"
        return X, problems


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


def _session(settings: ServiceSettings, model: Any):  # noqa: ANN202 - a context manager of PartySession
    from mpc_fl.protocols import uses_crypten
    from mpc_fl.runtime.session import connect

    hello = {"mode": "serve", "protocol": model.part.protocol, "model": model.part.fingerprint}
    return connect(
        settings.fed, settings.role, settings.key, uses_crypten=uses_crypten(model.part.protocol),
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
    """A provider's service: join, answer the bank's queries from the feature store; join again after a failure."""
    from mpc_fl.pipeline import load_model

    model = load_model(settings.model_path, settings.role)
    _check_columns(model, settings.store)
    while True:
        try:
            with _session(settings, model) as session:
                _provider_queries(session, model, settings.store, on_query)
            if not forever:
                return
        except (PartyConnectionError, ProtocolMismatchError) as err:
            if not forever:
                raise
            log.warning("session ended (%s); joining again", str(err).splitlines()[0])
            time.sleep(1.0)


def _provider_queries(
    session: Any, model: Any, store: FeatureStore, on_query: Callable[[int], None] | None
) -> None:
    ch = session.channel
    n = 0
    while True:
        msg = ch.recv_json(BANK, timeout_s=SERVICE_OP_TIMEOUT_S)
        if msg["op"] == "stop":
            return
        ids = [str(i) for i in msg["ids"]]
        X, problems = store.rows(ids)
        ch.send_json(BANK, {"problems": problems})
        if problems:
            continue  # the bank drops these ids and asks again
        model.protocol.decision_function(session, LocalData(model.scaler.transform(X)))
        n += 1
        if on_query:
            on_query(n)


@dataclass
class _Request:
    ids: list[str]
    future: Future = field(default_factory=Future)


@dataclass
class Scored:
    """The answer for one application id: a probability, or why there is none."""

    id: str
    score: float | None = None
    error: str | None = None


class BankService:
    """The bank's side of the scoring service (thread-safe; runs its federation session in a thread)."""

    def __init__(self, settings: ServiceSettings, *, decoys: int = 0, max_batch: int = 256):
        from mpc_fl.pipeline import load_model

        self.settings = settings
        self.model = load_model(settings.model_path, BANK)
        _check_columns(self.model, settings.store)
        self.decoys, self.max_batch = int(decoys), int(max_batch)
        pool = self.model.part.arrays.get("aligned_ids")
        self._decoy_pool = [str(i) for i in pool] if pool is not None else []
        if self.decoys and len(self._decoy_pool) < self.decoys + 1:
            raise ValueError(
                "decoys need the bank's aligned customers from training, which this model part lacks"
            )
        self._prg = PRG.fresh()  # decoy choice and order: the provider must not predict them
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._ready = threading.Event()
        self._stop = threading.Event()
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

    def score(self, ids: list[str] | str, timeout_s: float = 60.0) -> list[Scored]:
        """Score one application id (or a small batch); errors are per id, the service keeps running."""
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        if not self._ready.is_set():
            why = self.last_error or "the parties are still connecting"
            return [Scored(i, error=f"provider unavailable: {why}") for i in ids]
        request = _Request(ids)
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
        while True:
            try:
                first = self._requests.get(timeout=IDLE_WAIT_S)
                break
            except queue.Empty:
                if self._stop.is_set():
                    return None
                if session.channel.mesh.broken is not None:
                    raise session.channel.mesh.broken from None
        if first is None:
            return None
        batch, n = [first], len(first.ids)
        while n < self.max_batch:
            try:
                r = self._requests.get_nowait()
            except queue.Empty:
                break
            if r is None:
                self._requests.put(None)
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
            try:
                results = self._score_batch(session, providers, [i for r in batch for i in r.ids])
            except Exception as err:
                self._ready.clear()  # before anyone hears of it: the next query waits for the new session
                why = f"provider unavailable: {str(err).splitlines()[0]}"
                for r in batch:
                    r.future.set_result([Scored(i, error=why) for i in r.ids])
                raise
            for r in batch:
                r.future.set_result([results[i] for i in r.ids])

    def _with_decoys(self, ids: list[str]) -> list[str]:
        if not self.decoys:
            return ids
        pool = [i for i in self._decoy_pool if i not in set(ids)]
        picks = self._prg.permutation(len(pool))[: self.decoys * len(ids)]
        mixed = ids + [pool[k] for k in picks]
        return [mixed[k] for k in self._prg.permutation(len(mixed))]

    def _score_batch(self, session: Any, providers: list[str], ids: list[str]) -> dict[str, Scored]:
        """Score the distinct ``ids`` (plus decoys); an id any party cannot serve gets an error instead."""
        real = list(dict.fromkeys(ids))
        results: dict[str, Scored] = {}
        query = self._with_decoys(real)
        while set(query) & set(real):
            X, problems = self.settings.store.rows(query)
            if not problems:
                for p in providers:
                    session.channel.send_json(p, {"op": "score", "ids": query})
                for p in providers:
                    answer = session.channel.recv_json(p)["problems"]
                    problems |= {i: f"{p} cannot score it: {why}" for i, why in answer.items()}
            else:
                problems = {i: f"the bank cannot score it: {why}" for i, why in problems.items()}
            if problems:  # drop those ids (decoys silently) and ask again
                results |= {i: Scored(i, error=why) for i, why in problems.items() if i in real}
                query = [i for i in query if i not in problems]
                continue
            z = self.model.protocol.decision_function(session, LocalData(self.model.scaler.transform(X)))
            p_all = 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))
            wanted = set(real)
            results |= {
                i: Scored(i, score=float(p)) for i, p in zip(query, p_all, strict=True) if i in wanted
            }
            break
        return results


# ---------------------------------------------------------------------------------------------- HTTP
def serve_http(service: BankService, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A small local HTTP endpoint for the bank's own systems; returns the running server."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/health":
                return self._reply(404, {"error": "GET /health or POST /score"})
            part = service.model.part
            self._reply(200, {"ready": service.ready, "model": part.fingerprint, "protocol": part.protocol,
                              "error": service.last_error})  # fmt: skip

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/score":
                return self._reply(404, {"error": "GET /health or POST /score"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                ids = body["ids"] if isinstance(body.get("ids"), list) else [body["id"]]
            except (ValueError, KeyError, TypeError):
                return self._reply(400, {"error": 'send {"ids": ["..."]} or {"id": "..."}'})
            t0 = time.perf_counter()
            results = service.score([str(i) for i in ids])
            self._reply(200, {
                "scores": {r.id: r.score for r in results if r.error is None},
                "errors": {r.id: r.error for r in results if r.error is not None},
                "latency_ms": 1000 * (time.perf_counter() - t0),
            })  # fmt: skip

        def log_message(self, *args: object) -> None:  # keep stderr for the service's own lines
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="bank-http").start()
    return server
