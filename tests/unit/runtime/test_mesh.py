"""The links between members, in one process: frame limits, reader failures, minted certificates, link modes.

Two members are :class:`Mesh` objects in threads; a misbehaving member is a real member
(its own key, its own TLS link) that writes what no mpc_fl member writes.
"""

from __future__ import annotations

import datetime
import logging
import resource
import socket
import ssl
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from mpc_fl.runtime import mesh as mesh_module
from mpc_fl.runtime.errors import PartyConnectionError
from mpc_fl.runtime.federation import (
    Federation,
    FederationError,
    Member,
    federation_text,
    load_federation,
    local_federation,
)
from mpc_fl.runtime.ledger import Ledger
from mpc_fl.runtime.mesh import _HEADER, APP, CONTROL, CRYPTEN_MAIN, Mesh

# ------------------------------------------------------------------ helpers


def _connect_all(
    fed_by_role: dict[str, Federation], keys: dict[str, Path]
) -> dict[str, Mesh | BaseException]:
    """Connect one Mesh per role at once (each with its own view of the federation); each ends linked or failed."""
    out: dict[str, Mesh | BaseException] = {}

    def run(role: str) -> None:
        fed = fed_by_role[role]
        peers = tuple(r for r in fed_by_role if r != role)
        mesh = Mesh(fed, role, str(keys[role]), Ledger(party=role), peers=peers)
        try:
            mesh.connect()
            out[role] = mesh
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            out[role] = err

    threads = [threading.Thread(target=run, args=(r,)) for r in fed_by_role]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@pytest.fixture
def pair(tmp_path):  # noqa: ANN201
    """A linked bank and provider (TLS), closed afterwards."""
    fed, keys = local_federation(("bank", "provider"), tmp_path, dealer=False)
    fed = replace(fed, connect_timeout_s=20.0)
    meshes = _connect_all({"bank": fed, "provider": fed}, keys)
    assert all(isinstance(m, Mesh) for m in meshes.values()), meshes
    yield meshes
    for m in meshes.values():
        m.close(goodbye=False)


def _raw_frame(sender: Mesh, to: str, channel: int, length: int, payload: bytes = b"") -> None:
    """Write a frame header (and bytes) on ``sender``'s real, authenticated link, bypassing its checks."""
    sender._out[to].write(_HEADER.pack(channel, length) + payload)


def _recv_error(mesh: Mesh, peer: str, channel: int, timeout_s: float = 60.0) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(PartyConnectionError) as err:
        mesh.recv(peer, channel, timeout_s=timeout_s)
    return str(err.value), time.monotonic() - start


# ------------------------------------------------------------------ frames


@pytest.mark.parametrize(
    ("length", "shown"),
    [((1 << 64) - 1, "18446744073709551615 bytes (-1 as a signed length)"), (1 << 40, f"{1 << 40} bytes")],
)
def test_a_peer_announcing_a_huge_or_negative_length_fails_the_link_at_once(pair, length, shown):
    bank, provider = pair["bank"], pair["provider"]
    _raw_frame(provider, "bank", APP, length)
    line, waited = _recv_error(bank, "provider", APP)
    assert line == (
        f"bank: 'provider' broke the link provider -> bank: it announced a frame of {shown}, "
        f"above the limit of {1 << 34} (max_frame_bytes)"
    )
    assert waited < 2.0
    # the mesh is broken: a receive on another channel fails at once with the same line
    assert _recv_error(bank, "provider", CRYPTEN_MAIN)[0] == line


def test_the_limit_is_a_setting_and_the_sender_refuses_to_exceed_it(tmp_path):
    fed, keys = local_federation(("bank", "provider"), tmp_path, dealer=False)
    fed = replace(fed, connect_timeout_s=20.0, max_frame_bytes=1000)
    meshes = _connect_all({"bank": fed, "provider": fed}, keys)
    bank, provider = meshes["bank"], meshes["provider"]
    try:
        provider.send("bank", APP, b"x" * 1000)  # at the limit: fine
        assert bytes(bank.recv("provider", APP, timeout_s=10)) == b"x" * 1000
        with pytest.raises(PartyConnectionError, match=r"a 1001-byte message for 'bank' is above the frame limit of 1000"):  # fmt: skip
            provider.send("bank", APP, b"x" * 1001)
        _raw_frame(provider, "bank", APP, 1001)
        assert (
            "it announced a frame of 1001 bytes, above the limit of 1000"
            in _recv_error(bank, "provider", APP)[0]
        )
    finally:
        for m in meshes.values():
            m.close(goodbye=False)
    with pytest.raises(FederationError, match="max_frame_bytes"):
        replace(fed, max_frame_bytes=0)


def test_a_frame_for_a_channel_that_does_not_exist_breaks_the_link(pair):
    _raw_frame(pair["provider"], "bank", 200, 3, b"abc")
    line, waited = _recv_error(pair["bank"], "provider", APP)
    assert line == "bank: 'provider' broke the link provider -> bank: it announced a frame for channel 200, which does not exist"  # fmt: skip
    assert waited < 2.0


def test_an_announced_length_reserves_no_memory_until_its_bytes_arrive(pair):
    """2 GiB announced, 10 bytes sent: the receiver holds one 64 MiB block, not 2 GiB."""
    bank, provider = pair["bank"], pair["provider"]
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _raw_frame(provider, "bank", APP, 2 << 30, b"0123456789")
    time.sleep(0.5)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) / 1024
    assert grown_mib < 512, grown_mib
    provider.close(goodbye=True)  # ends mid-frame: the receiver learns it at once
    line, waited = _recv_error(bank, "provider", APP)
    assert "'provider' dropped out" in line and "closed mid-message" in line and waited < 2.0


def test_a_frame_above_one_block_arrives_whole(pair):
    data = bytes(range(256)) * ((64 << 20) // 256 + 1000)  # just over 64 MiB
    threading.Thread(target=pair["provider"].send, args=("bank", APP, data)).start()
    assert bytes(pair["bank"].recv("provider", APP, timeout_s=60)) == data


def test_any_exception_in_the_reader_wakes_a_waiting_receiver_at_once(pair, monkeypatch):
    """A MemoryError (or any bug) in the reader thread used to leave receivers waiting 1800 s."""
    bank, provider = pair["bank"], pair["provider"]

    def out_of_memory(stream, n):  # noqa: ANN001, ANN202
        raise MemoryError

    got: dict[str, object] = {}

    def wait() -> None:
        start = time.monotonic()
        try:
            bank.recv("provider", CRYPTEN_MAIN, timeout_s=1800)  # waits on a channel nothing is sent on
        except PartyConnectionError as err:
            got["line"], got["waited"] = str(err), time.monotonic() - start

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    monkeypatch.setattr(mesh_module, "_read_payload", out_of_memory)
    provider.send("bank", APP, b"hello")
    waiter.join(10)
    assert got["line"] == "bank: the link provider -> bank failed reading a 5-byte frame (MemoryError)", got
    assert got["waited"] < 2.0


# ------------------------------------------------------------------ certificates


def _certificate(role: str, key: ed25519.Ed25519PrivateKey, *, issuer: x509.Certificate | None = None,
                 issuer_key: ed25519.Ed25519PrivateKey | None = None, ca: bool = False) -> x509.Certificate:  # fmt: skip
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .sign(issuer_key or key, None)
    )


def _key_file(path: Path, key: ed25519.Ed25519PrivateKey, cert: x509.Certificate) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem + cert.public_bytes(serialization.Encoding.PEM))
    return path


def _private_key(key_file: Path) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


def _federation(tmp_path: Path, legacy: bool) -> tuple[Federation, dict[str, Path]]:
    """bank, provider, dealer; ``legacy``: CA:TRUE certificates, as `mpc-fl keygen` made them before."""
    fed, keys = local_federation(("bank", "provider"), tmp_path / "keys", dealer=True)
    if legacy:
        members = []
        for m in fed.members:
            key = ed25519.Ed25519PrivateKey.generate()
            cert = _certificate(m.role, key, ca=True)
            keys[m.role] = _key_file(tmp_path / f"{m.role}.legacy.key", key, cert)
            members.append(replace(m, certificate=cert.public_bytes(serialization.Encoding.PEM).decode()))
        fed = replace(fed, members=tuple(members))
    return replace(fed, connect_timeout_s=3.0), keys


def _minted_by_dealer(tmp_path: Path, fed: Federation, keys: dict[str, Path]) -> Path:
    """The dealer's forgery: a fresh key with a certificate naming 'provider', signed by the dealer's key."""
    dealer_cert = x509.load_pem_x509_certificate(fed.member("dealer").certificate.encode())
    key = ed25519.Ed25519PrivateKey.generate()
    cert = _certificate("provider", key, issuer=dealer_cert, issuer_key=_private_key(keys["dealer"]))
    return _key_file(tmp_path / "minted.key", key, cert)


def _serve_tls_once(key_file: Path, port: int) -> threading.Thread:
    """A listener at ``port`` presenting ``key_file``'s certificate to one dialler."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(key_file))
    listener = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        with listener:
            sock, _ = listener.accept()
            with sock:
                try:
                    with ctx.wrap_socket(sock, server_side=True) as tls:
                        tls.recv(1)
                except (OSError, ssl.SSLError):
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("legacy", [False, True], ids=["ca-false", "legacy-ca-true"])
def test_a_certificate_a_member_minted_for_another_is_refused_naming_the_signer(tmp_path, legacy):
    """The dealer listens at the provider's address with a 'provider' certificate it signed itself."""
    fed, keys = _federation(tmp_path, legacy)
    minted = _minted_by_dealer(tmp_path, fed, keys)
    provider = fed.member("provider")
    _serve_tls_once(minted, provider.port)
    bank = Mesh(fed, "bank", str(keys["bank"]), Ledger(party="bank"), peers=("provider",))
    start = time.monotonic()
    with pytest.raises(PartyConnectionError) as err:
        bank.connect()
    assert str(err.value) == (
        f"bank: the party listening at {provider.address} is not 'provider': it presented a certificate "
        f"for 'provider' signed by member 'dealer', not 'provider''s own key (a member cannot vouch for another)"
    )
    assert time.monotonic() - start < 2.5  # at once, not at the connect timeout


@pytest.mark.parametrize("legacy", [False, True], ids=["ca-false", "legacy-ca-true"])
def test_a_member_dialling_with_a_minted_certificate_is_not_admitted(tmp_path, legacy, caplog):
    fed, keys = _federation(tmp_path, legacy)
    fed = replace(fed, connect_timeout_s=1.5)
    minted = _minted_by_dealer(tmp_path, fed, keys)
    bank = Mesh(fed, "bank", str(keys["bank"]), Ledger(party="bank"), peers=("provider",))
    failed: list[BaseException] = []
    connecting = threading.Thread(target=lambda: _catch(bank.connect, failed))
    with caplog.at_level(logging.INFO, logger="mpc_fl.runtime.mesh"):
        connecting.start()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(str(minted))
        for _ in range(50):
            try:
                with socket.create_connection(("127.0.0.1", fed.member("bank").port), timeout=2) as raw:
                    with ctx.wrap_socket(raw) as tls:
                        tls.sendall(_HEADER.pack(CONTROL, 2) + b"{}")
                        tls.recv(1)  # the bank closes the link: it did not take the forgery in
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
            except (OSError, ssl.SSLError):
                break
        connecting.join(10)
    assert "provider" not in bank._in
    assert failed and "'provider' did not connect within 2 s" in str(failed[0])
    refusals = [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]
    expected = (
        "its certificate is not a member's own (invalid CA certificate)"  # OpenSSL: CA:FALSE signs nothing
        if not legacy
        else "a certificate for 'provider' signed by member 'dealer', not a member's own (a member cannot vouch for another)"
    )
    assert any(expected in r for r in refusals), refusals


def _catch(fn, into: list) -> None:  # noqa: ANN001
    try:
        fn()
    except BaseException as err:  # noqa: BLE001
        into.append(err)


def test_new_member_certificates_cannot_sign_and_the_federation_pins_only_self_signed_ones(tmp_path):
    fed, keys = _federation(tmp_path, legacy=False)
    cert = x509.load_pem_x509_certificate(fed.member("dealer").certificate.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is False
    minted = x509.load_pem_x509_certificate(_minted_by_dealer(tmp_path, fed, keys).read_bytes())
    forged = [m if m.role != "provider" else Member("provider", m.host, m.port, minted.public_bytes(serialization.Encoding.PEM).decode()) for m in fed.members]  # fmt: skip
    path = tmp_path / "forged.toml"
    path.write_text(federation_text(forged))
    with pytest.raises(
        FederationError, match=r"member 'provider': its certificate is not self-signed by its own key"
    ):
        load_federation(path)


# ------------------------------------------------------------------ link modes


def test_members_in_different_link_modes_both_fail_within_seconds_naming_the_mode(tmp_path):
    fed, keys = local_federation(("bank", "provider"), tmp_path, dealer=False)
    fed = replace(fed, connect_timeout_s=30.0)
    start = time.monotonic()
    out = _connect_all({"bank": fed, "provider": replace(fed, insecure_cleartext=True)}, keys)
    waited = time.monotonic() - start
    bank, provider = fed.member("bank"), fed.member("provider")
    assert str(out["bank"]) == (
        f"bank: 'provider' at {provider.address} speaks cleartext (it runs with --insecure-cleartext), "
        f"but this federation's links are TLS: every member must run in the same link mode"
    )
    assert str(out["provider"]) == (
        f"provider: 'bank' at {bank.address} speaks TLS, but this member runs with --insecure-cleartext: "
        f"every member must run in the same link mode"
    )
    assert waited < 6.0  # the connect timeout is 30 s


def test_members_in_the_same_cleartext_mode_still_link(tmp_path):
    fed, keys = local_federation(("bank", "provider"), tmp_path, dealer=False)
    fed = replace(fed, connect_timeout_s=20.0, insecure_cleartext=True)
    out = _connect_all({"bank": fed, "provider": fed}, keys)
    try:
        assert all(isinstance(m, Mesh) for m in out.values()), out
        out["provider"].send("bank", APP, b"clear")
        assert bytes(out["bank"].recv("provider", APP, timeout_s=10)) == b"clear"
    finally:
        for m in out.values():
            if isinstance(m, Mesh):
                m.close(goodbye=False)


def test_a_pinned_certificate_outside_its_validity_period_is_refused_at_load(tmp_path):
    fed, _ = local_federation(("bank", "provider"), tmp_path / "keys", dealer=False)
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provider")])
    now = datetime.datetime.now(datetime.UTC)
    expired = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1)).sign(key, None)
    )  # fmt: skip
    pem = expired.public_bytes(serialization.Encoding.PEM).decode()
    path = tmp_path / "federation.toml"
    path.write_text(
        federation_text([m if m.role != "provider" else replace(m, certificate=pem) for m in fed.members])
    )
    with pytest.raises(FederationError, match=r"member 'provider': its certificate is valid from .* not now"):
        load_federation(path)
