"""The bank's scoring endpoint: ``POST /score {"ids": [...]}``, ``GET /health`` and ``GET /stability``
(the drift monitor), guarded and bounded.

Why guarded: the endpoint answers for the joint model, so an unauthenticated caller could score
any id and learn from the errors which SMEs the provider serves. Every request needs the bank's
bearer token (``Authorization: Bearer <token>``, compared in constant time) unless the operator
turns authentication off, which is allowed on a loopback address only. It binds loopback unless
told otherwise, and off loopback it speaks HTTPS only (the token must not cross a network in clear).

Why bounded: a slow, huge or malformed request must not hold a thread, wedge the scoring queue
or go unanswered. Each connection has a deadline for sending its request; bodies need a
``Content-Length`` within :attr:`EndpointSettings.max_body_bytes`; a request carries at most
``max_ids`` ids of at most :data:`~mpc_fl.app.serving.features.MAX_ID_CHARS` characters; scoring has a
time limit; connections beyond ``max_connections`` get 503 at once. Every failure is answered
in JSON. ``/health`` never waits for the scoring queue and says whether scoring is stuck.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mpc_fl.app.serving.features import MAX_ID_CHARS
from mpc_fl.models.stability import WARN

log = logging.getLogger(__name__)

USAGE = 'send {"ids": ["..."]} or {"id": "..."}, and optionally "applications": {"id": {"feature": number}}'


@dataclass(frozen=True)
class EndpointSettings:
    """Where the endpoint listens, who may call it and how much one request may ask."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: The bearer token every request must carry; None turns authentication off (loopback only).
    token: str | None = None
    max_body_bytes: int = 64 * 1024
    max_ids: int = 256
    #: A connection must have sent its whole request within this time.
    request_deadline_s: float = 5.0
    score_timeout_s: float = 30.0
    max_connections: int = 64
    #: ``/health`` reports not ready while a batch has been scoring longer than this.
    stuck_after_s: float = 30.0
    #: PEM certificate chain and key: the endpoint speaks HTTPS (required off loopback).
    certificate: Path | None = None
    certificate_key: Path | None = None

    def validate(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"--http: port {self.port} is not a TCP port")
        if self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"--http {self.host}:{self.port} without authentication would let anyone on the network score "
                "ids: bind a loopback address, or keep the bearer token (drop --http-no-auth)"
            )
        if not is_loopback(self.host) and self.certificate is None:
            raise ValueError(
                f"--http {self.host}:{self.port} would send the bearer token over the network in clear: "
                "give --http-certificate and --http-certificate-key (HTTPS), or bind a loopback address"
            )
        if (self.certificate is None) != (self.certificate_key is None):
            raise ValueError("--http-certificate and --http-certificate-key go together")
        for path in (self.certificate, self.certificate_key):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{path}: no such file (the endpoint's TLS certificate or key)")
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the endpoint's bearer token is shorter than 16 characters")
        for name in ("max_body_bytes", "max_ids", "request_deadline_s", "score_timeout_s", "max_connections"):
            if getattr(self, name) <= 0:
                raise ValueError(f"endpoint setting {name} must be positive")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_from_file(path: Path) -> str:
    """The bank's endpoint token: read from ``path``, or created there (0600) on first use."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise ValueError(f"{path}: the endpoint token is readable by other users; chmod 600 it") from None
        token = path.read_text().strip()
        if len(token) < 16:
            raise ValueError(f"{path}: the endpoint token is shorter than 16 characters") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


class _Refused(Exception):
    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.headers = code, headers or {}


class ScoringEndpoint(ThreadingHTTPServer):
    """The HTTP server: one thread per connection, at most ``max_connections`` at a time."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: callers beyond max_connections get their 503 at once

    def __init__(self, service: Any, settings: EndpointSettings):
        settings.validate()
        self.service, self.settings = service, settings
        self._slots = threading.BoundedSemaphore(settings.max_connections)
        self._count = threading.Lock()
        self.in_flight = 0
        super().__init__((settings.host, settings.port), _Handler)
        if settings.certificate is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            tls.load_cert_chain(settings.certificate, settings.certificate_key)
            # The handshake runs in the connection's own thread, under its deadline (see _Handler.setup).
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.settings.certificate else 'http'}://{host}:{port}"

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # full: answer now, from this thread, and close
            with contextlib.suppress(OSError):
                request.settimeout(0.5)
                request.sendall(_raw_reply(503, {"error": "too many connections; try again"}))
            self.shutdown_request(request)
            return
        with self._count:
            self.in_flight += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count:
                self.in_flight -= 1
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client's fault stays one log line
        log.debug("request from %s failed", client_address, exc_info=True)


def _raw_reply(code: int, body: dict) -> bytes:
    data = json.dumps(body).encode()
    head = f"HTTP/1.0 {code} {'Busy' if code == 503 else 'Error'}\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data


class _Handler(BaseHTTPRequestHandler):
    server: ScoringEndpoint
    server_version = "mpc-fl"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    # ------------------------------------------------------------------ connection deadline
    def setup(self) -> None:
        self.timeout = self.server.settings.request_deadline_s
        super().setup()
        self._reading = True
        self._deadline = threading.Timer(self.server.settings.request_deadline_s, self._expire)
        self._deadline.daemon = True
        self._deadline.start()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # a failure ends this connection only (handle_error)

    def _expire(self) -> None:
        if self._reading:  # a client still sending its request after the deadline: cut it off
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):
            super().finish()

    # ------------------------------------------------------------------ replies
    def _reply(self, code: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method...) in JSON like ours."""
        self.close_connection = True
        self.request_version = self.protocol_version  # a status line even for an unparsable request line
        with contextlib.suppress(OSError):
            self._reply(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def log_message(self, *args: object) -> None:  # keep stderr for the service's own lines
        return

    def _guarded(self, handle: Any) -> None:
        try:
            self._authenticate()
            body = handle()
            self._reply(200, body)
        except _Refused as err:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._reply(err.code, {"error": str(err)}, err.headers)
        except OSError as err:  # the client went away or was cut off
            log.debug("request dropped: %s", err)
        except Exception:  # noqa: BLE001 - one request's failure, never the endpoint's
            log.exception("internal error answering a request")
            with contextlib.suppress(OSError):
                self._reply(500, {"error": "internal error; see the bank's service log"})

    # ------------------------------------------------------------------ checks
    def _authenticate(self) -> None:
        token = self.server.settings.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        if not (
            given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode())
        ):
            raise _Refused(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    def _body(self) -> dict:
        limit = self.server.settings.max_body_bytes
        length = self.headers.get("Content-Length")
        if length is None:
            raise _Refused(411, "a Content-Length header is needed")
        if not length.strip().isdigit():
            raise _Refused(400, f"Content-Length {length!r} is not a size")
        if int(length) > limit:
            raise _Refused(413, f"the body is larger than {limit:,} bytes")
        data = self.rfile.read(int(length))
        self._reading = False
        self._deadline.cancel()
        if len(data) != int(length):
            raise _Refused(400, "the body is shorter than its Content-Length")
        try:
            body = json.loads(data or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _Refused(400, f"the body is not JSON; {USAGE}") from None
        if not isinstance(body, dict):
            raise _Refused(400, f"the body is not a JSON object; {USAGE}")
        return body

    def _ids(self, body: dict) -> list[str]:
        given = body.get("applications")
        default = list(given) if isinstance(given, dict) and given else None  # the applications' ids
        ids = body.get("ids", [body["id"]] if "id" in body else default)
        if not isinstance(ids, list) or not ids:
            raise _Refused(400, USAGE)
        if len(ids) > self.server.settings.max_ids:
            raise _Refused(413, f"at most {self.server.settings.max_ids} ids per request")
        if not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
            raise _Refused(400, "every id is a string or an integer")
        ids = [str(i) for i in ids]
        if any(len(i) > MAX_ID_CHARS or not i for i in ids):
            raise _Refused(400, f"an id is empty or longer than {MAX_ID_CHARS} characters")
        return ids

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._reading = False
        self._deadline.cancel()
        if self.path == "/stability":
            return self._guarded(self._stability)
        if self.path != "/health":
            return self._guarded(self._not_found)
        self._guarded(self._health)

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/score":
            return self._guarded(self._not_found)
        self._guarded(self._score)

    def _not_found(self) -> dict:
        raise _Refused(404, "GET /health, GET /stability or POST /score")

    def _stability(self) -> dict:
        """The bank's drift monitor (its own features and the score over the last applications scored)."""
        return {**self.server.service.stability(), "warn_at": WARN}

    def _health(self) -> dict:
        service, settings = self.server.service, self.server.settings
        busy = service.busy_s
        part = service.model.part
        return {
            "ready": bool(service.ready and busy < settings.stuck_after_s),
            "busy_s": round(busy, 3),
            "connections": self.server.in_flight,
            "model": part.fingerprint,
            "protocol": part.protocol,
            "error": service.last_error
            or (f"scoring has been busy for {busy:.0f} s" if busy >= settings.stuck_after_s else None),
        }

    def _applications(self, body: dict, ids: list[str]) -> dict | None:
        """The bank's features sent with the request (an applicant not in its store yet), checked here."""
        from mpc_fl.app.serving.features import application_rows

        if "applications" not in body:
            return None
        try:
            rows = application_rows(body["applications"], self.server.service.model.part.feature_names)
        except ValueError as e:
            raise _Refused(400, str(e)) from None
        stray = [i for i in rows if i not in ids]
        if stray:
            raise _Refused(400, f"applications {stray[:3]} are not among the ids to score")
        return rows

    def _score(self) -> dict:
        body = self._body()
        ids = self._ids(body)
        applications = self._applications(body, ids)
        t0 = time.perf_counter()
        try:
            results = self.server.service.score(
                ids, timeout_s=self.server.settings.score_timeout_s, applications=applications
            )
        except TimeoutError:
            raise _Refused(504, f"not scored within {self.server.settings.score_timeout_s:.0f} s") from None
        return {
            "scores": {r.id: r.score for r in results if r.error is None},
            "errors": {r.id: r.error for r in results if r.error is not None},
            "warnings": {r.id: r.warning for r in results if r.warning is not None},
            "reasons": {r.id: r.reasons for r in results if r.reasons is not None},
            "latency_ms": 1000 * (time.perf_counter() - t0),
        }


def serve_http(service: Any, settings: EndpointSettings) -> ScoringEndpoint:
    """Start the endpoint in a thread and return it (``.url``, ``.shutdown()``)."""
    server = ScoringEndpoint(service, settings)
    threading.Thread(target=server.serve_forever, daemon=True, name="bank-http").start()
    return server
