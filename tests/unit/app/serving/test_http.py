"""The scoring endpoint as a hostile client meets it: no token, slow, huge, malformed, too many."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mpc_fl.app.serving.http import EndpointSettings, serve_http, token_from_file
from mpc_fl.app.serving.service import Scored

TOKEN = "t" * 43


@dataclass
class _Service:
    """Answers like the bank's service; ``stall`` holds a query, ``fail`` raises inside it."""

    ready: bool = True
    busy_s: float = 0.0
    last_error: str | None = None
    stall: threading.Event | None = None
    fail: bool = False
    asked: list = field(default_factory=list)
    model: object = field(
        default_factory=lambda: type(
            "M",
            (),
            {
                "part": type(
                    "P", (), {"fingerprint": "f" * 64, "protocol": "ss_lr", "feature_names": ["a", "b"]}
                )
            },
        )
    )

    def stability(self) -> dict:
        return {"rows": 3, "window": 1000, "features": {"a": 0.31}, "score": 0.02, "drifted": ["a"]}

    def score(
        self, ids: list[str], timeout_s: float = 60.0, applications: dict | None = None
    ) -> list[Scored]:
        self.asked.append(ids if applications is None else (ids, applications))
        if self.fail:
            raise RuntimeError("boom")
        if self.stall is not None and not self.stall.wait(timeout_s):
            raise TimeoutError
        return [
            Scored(i, score=0.5) if i != "unknown" else Scored(i, error="cannot score this id") for i in ids
        ]


@pytest.fixture
def endpoint():
    service = _Service()
    server = serve_http(
        service,
        EndpointSettings(port=0, token=TOKEN, request_deadline_s=1.0, score_timeout_s=1.0, max_connections=8),
    )
    yield server, service
    server.shutdown()
    server.server_close()


def _call(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):  # noqa: ANN001, ANN202
    con = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    con.request(method, path, body=body, headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
    r = con.getresponse()
    data = r.read()
    con.close()
    return r.status, json.loads(data)


def _raw(server, data: bytes) -> tuple[int, dict]:  # noqa: ANN001
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(data)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_scores_need_the_bearer_token(endpoint):
    server, service = endpoint
    body = json.dumps({"ids": ["a", "unknown"]}).encode()
    status, reply = _call(server, "POST", "/score", body)
    assert status == 200 and reply["scores"] == {"a": 0.5} and "unknown" in reply["errors"]
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, reply = _call(server, "POST", "/score", body, headers)
        assert status == 401 and "token" in reply["error"]
    status, _ = _call(server, "GET", "/health", headers={"Authorization": ""})
    assert status == 401
    assert len(service.asked) == 1  # nothing unauthenticated reached the service


def test_stability_reports_the_drift_monitor_to_the_token_holder_only(endpoint):
    server, _ = endpoint
    status, reply = _call(server, "GET", "/stability")
    assert status == 200 and reply["drifted"] == ["a"] and reply["warn_at"] == 0.25
    status, _ = _call(server, "GET", "/stability", headers={"Authorization": ""})
    assert status == 401


def test_off_loopback_the_endpoint_needs_a_token_and_https(tmp_path):
    with pytest.raises(ValueError, match="without authentication"):
        EndpointSettings(host="0.0.0.0", token=None).validate()
    with pytest.raises(ValueError, match="in clear"):
        EndpointSettings(host="0.0.0.0", token=TOKEN).validate()
    EndpointSettings(host="127.0.0.1", token=None).validate()
    cert, key = _certificate(tmp_path)
    EndpointSettings(host="0.0.0.0", token=TOKEN, certificate=cert, certificate_key=key).validate()
    assert EndpointSettings().host == "127.0.0.1"


def _certificate(tmp: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank scoring")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return tmp / "cert.pem", tmp / "key.pem"


def test_with_a_certificate_the_endpoint_speaks_https_only(tmp_path):
    import ssl

    cert, key = _certificate(tmp_path)
    server = serve_http(
        _Service(),
        EndpointSettings(port=0, token=TOKEN, certificate=cert, certificate_key=key, request_deadline_s=1),
    )
    try:
        assert server.url.startswith("https://")
        tls = ssl.create_default_context(cafile=str(cert))
        con = http.client.HTTPSConnection(*server.server_address[:2], timeout=10, context=tls)
        con.request("GET", "/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert con.getresponse().status == 200
        con.close()
        with pytest.raises((http.client.HTTPException, OSError)):  # a cleartext caller gets no answer
            _call(server, "GET", "/health")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"POST /score HTTP/1.0\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n", 411),
        (b"POST /score HTTP/1.0\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST /score HTTP/1.0\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 12000000\r\n\r\n", 413),
        (b"PUT /score HTTP/1.0\r\n\r\n", 501),
        (b"GET /health HTTP/9.9\r\n\r\n", 505),
        (b"GET /health HTTP/1.x\r\n\r\n", 400),
    ],
)  # fmt: skip
def test_malformed_requests_get_a_json_error(endpoint, request_bytes, status):
    server, service = endpoint
    got, reply = _raw(server, request_bytes)
    assert got == status and reply["error"]
    assert service.asked == []


@pytest.mark.parametrize(
    "body, status, match",
    [
        (b"[1, 2]", 400, "not a JSON object"),
        (b"{", 400, "not JSON"),
        (json.dumps({"ids": []}).encode(), 400, "ids"),
        (json.dumps({"ids": [True]}).encode(), 400, "string or an integer"),
        (json.dumps({"ids": ["x" * 500]}).encode(), 400, "longer than"),
        (json.dumps({"ids": [str(i) for i in range(257)]}).encode(), 413, "at most 256"),
        (json.dumps({"applications": []}).encode(), 400, "send"),
        (json.dumps({"id": "x", "applications": {"x": {"a": 1}}}).encode(), 400, "missing b"),
        (json.dumps({"id": "x", "applications": {"x": {"a": 1, "b": 2, "c": 3}}}).encode(), 400, "unknown c"),
        (
            json.dumps({"id": "x", "applications": {"x": {"a": 1, "b": "2"}}}).encode(),
            400,
            "b must be finite",
        ),
        (
            json.dumps({"id": "x", "applications": {"x": {"a": True, "b": 2}}}).encode(),
            400,
            "a must be finite",
        ),
        (b'{"id": "x", "applications": {"x": {"a": 1, "b": NaN}}}', 400, "b must be finite"),
        (json.dumps({"id": "x", "applications": {"y": {"a": 1, "b": 2}}}).encode(), 400, "not among the ids"),
    ],
)
def test_bodies_are_checked_before_anything_is_scored(endpoint, body, status, match):
    server, service = endpoint
    got, reply = _call(server, "POST", "/score", body)
    assert got == status and match in reply["error"]
    assert service.asked == []


def test_applications_come_with_their_features_checked_and_in_the_models_order(endpoint):
    """An applicant not in the bank's store yet: its features in the request, ids from them by default."""
    server, service = endpoint
    got, reply = _call(
        server, "POST", "/score", json.dumps({"applications": {"new-1": {"b": 2, "a": 1.5}}}).encode()
    )
    assert got == 200 and reply["scores"] == {"new-1": 0.5}
    ((ids, rows),) = service.asked
    assert ids == ["new-1"] and rows["new-1"].tolist() == [1.5, 2.0]


def test_slow_clients_are_cut_off_and_health_answers_meanwhile(endpoint):
    server, _ = endpoint
    slow = [socket.create_connection(server.server_address[:2]) for _ in range(5)]
    for s in slow:  # headers that never end
        s.sendall(b"POST /score HTTP/1.0\r\nContent-Length: 10\r\n")
    t0 = time.monotonic()
    status, health = _call(server, "GET", "/health")
    assert status == 200 and health["ready"] and time.monotonic() - t0 < 0.5
    for s in slow:
        s.settimeout(5)
        assert s.recv(65536) == b""  # closed once the deadline passes (a timeout here raises)
        s.close()
    assert time.monotonic() - t0 < 3


def test_a_trickling_body_cannot_hold_a_connection_past_the_deadline(endpoint):
    server, service = endpoint
    s = socket.create_connection(server.server_address[:2])
    s.sendall(
        b"POST /score HTTP/1.0\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: 100\r\n\r\n"
    )
    t0 = time.monotonic()
    s.settimeout(5)
    closed = False
    while time.monotonic() - t0 < 4:
        try:
            s.sendall(b" ")  # one byte every 0.2 s: each read succeeds, the whole never arrives
            time.sleep(0.2)
        except OSError:
            closed = True
            break
    s.close()
    assert closed and time.monotonic() - t0 < 3 and service.asked == []


def test_beyond_max_connections_callers_get_503_at_once(endpoint):
    server, _ = endpoint
    held = [socket.create_connection(server.server_address[:2]) for _ in range(8)]
    end = time.monotonic() + 5
    while server.in_flight < 8 and time.monotonic() < end:
        time.sleep(0.01)
    status, reply = _raw(server, b"GET /health HTTP/1.0\r\n\r\n")
    assert status == 503 and "too many" in reply["error"]
    for s in held:
        s.close()


def test_a_stuck_scorer_times_out_in_json_and_health_says_so(endpoint):
    server, service = endpoint
    service.stall = threading.Event()
    status, reply = _call(server, "POST", "/score", json.dumps({"id": "a"}).encode())
    assert status == 504 and "not scored within" in reply["error"]
    service.busy_s = 45.0
    status, health = _call(server, "GET", "/health")
    assert status == 200 and health["ready"] is False and "busy for 45 s" in health["error"]


def test_an_internal_error_is_answered_and_the_endpoint_keeps_serving(endpoint):
    server, service = endpoint
    service.fail = True
    status, reply = _call(server, "POST", "/score", json.dumps({"id": "a"}).encode())
    assert status == 500 and "internal error" in reply["error"] and "boom" not in reply["error"]
    service.fail = False
    status, _ = _call(server, "POST", "/score", json.dumps({"id": "a"}).encode())
    assert status == 200


def test_the_token_file_is_created_private_and_a_shared_one_is_refused(tmp_path):
    path = tmp_path / "bank.score-token"
    token = token_from_file(path)
    assert len(token) >= 32 and token_from_file(path) == token
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by other users"):
        token_from_file(path)
