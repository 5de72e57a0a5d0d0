"""Every byte between members is authenticated and encrypted; identities come from keys.

A forwarder placed on every link (a wiretap that relays the whole run) finds none of the
keys, shares, openings or messages the parties exchanged; the same search finds them all on
cleartext links (the positive control). Flipping one relayed byte fails the run with an
integrity error naming the link, and a process without the pinned key cannot join.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from mpc_fl.crypto import secure_crypten
from mpc_fl.runtime.federation import local_federation
from mpc_fl.runtime.identity import make_identity
from mpc_fl.runtime.local import PartyFailed, run_local
from tests.attacks.forwarder import Forwarder

_KEYS: list[bytes] = []
_MARKER = b"mpc_fl-secret-marker-"


def _recording_generator(monkeypatch) -> None:  # noqa: ANN001
    """Remember every stream key a member creates (children inherit this through fork)."""
    original = secure_crypten.CryptoGenerator.__init__

    def init(self, key: bytes) -> None:  # noqa: ANN001
        _KEYS.append(bytes(key))
        original(self, key)

    monkeypatch.setattr(secure_crypten.CryptoGenerator, "__init__", init)


def _secrets(session) -> dict:  # noqa: ANN001
    """Exchange shares, a fixed-mask opening and a protocol message; return what a wiretap must not see."""
    from mpc_fl.crypto.fixed_mask import FixedMaskMatrix
    from mpc_fl.crypto.secure_crypten import crypten

    n = 3000
    M = torch.arange(n * 4, dtype=torch.float64).view(n, 4) / 7.0
    fm = FixedMaskMatrix(M if session.rank == 1 else None, owner=1, shape=(n, 4), precision=12)
    u = crypten.cryptensor(torch.linspace(-1, 1, n), src=0)
    product = fm.t_matmul(u)
    z = (u * u).sum()
    peer = next(r for r in session.roles if r != session.role)
    marker = _MARKER + session.role.encode() + bytes(range(40))
    session.channel.send_bytes(peer, marker * 100)
    session.channel.recv_bytes(peer)
    return {
        "keys": list(_KEYS),
        "shares": [u._tensor.share[:64].numpy().tobytes(), product._tensor.share.numpy().tobytes()],
        "opening": fm.E[:64].numpy().tobytes(),  # the masked matrix E = M - A: random to outsiders only
        "marker": marker,
        "z": float(z.get_plain_text()),
    }


def _relayed(tmp_path, flip_at: int | None = None, cleartext: bool = False):  # noqa: ANN202
    fed, keys = local_federation(("bank", "provider"), tmp_path, dealer=True)
    relays = {
        m.role: Forwarder(target=m.port, flip_at=flip_at if m.role == "bank" else None) for m in fed.members
    }
    listen = {m.role: (m.host, m.port) for m in fed.members}
    members = tuple(replace(m, port=relays[m.role].port) for m in fed.members)
    fed = replace(fed, members=members, insecure_cleartext=cleartext)
    return (fed, keys), listen, relays


def _secret_pieces(res: dict) -> list[bytes]:
    pieces = []
    for r in res.values():
        s = r["result"]
        pieces += s["keys"] + [s["marker"], s["opening"][:16]]
        pieces += [sh[i : i + 8] for sh in s["shares"] for i in range(0, min(64, len(sh)), 16)]
    return pieces


def test_a_wiretap_on_every_link_sees_no_key_share_opening_or_message(tmp_path, monkeypatch):
    _recording_generator(monkeypatch)
    federation, listen, relays = _relayed(tmp_path)
    res = run_local(_secrets, federation=federation, listen=listen, timeout_s=120)
    seen = b"".join(f.seen() for f in relays.values())
    assert len(seen) > 100_000  # the whole run went through the wiretaps
    pieces = _secret_pieces(res)
    assert len(pieces) > 20
    assert [p for p in pieces if p in seen] == []
    assert res["bank"]["result"]["z"] == pytest.approx(
        float((torch.linspace(-1, 1, 3000) ** 2).sum()), rel=1e-3
    )


def test_the_same_wiretap_finds_everything_on_cleartext_links(tmp_path, monkeypatch):
    """Positive control: the search above works, so its silence on TLS links means something."""
    _recording_generator(monkeypatch)
    federation, listen, relays = _relayed(tmp_path, cleartext=True)
    res = run_local(_secrets, federation=federation, listen=listen, timeout_s=120)
    seen = b"".join(f.seen() for f in relays.values())
    for s in (res["bank"]["result"], res["provider"]["result"]):
        prev_key, next_key, local_key, global_key, dealer_key = s["keys"]  # creation order
        assert prev_key in seen and next_key in seen and global_key in seen and dealer_key in seen
        assert local_key not in seen  # never sent: the search does not find what is not there
        assert s["marker"] in seen and s["opening"][:16] in seen


def test_one_flipped_byte_fails_the_run_with_an_integrity_error_naming_the_link(tmp_path):
    federation, listen, relays = _relayed(tmp_path, flip_at=40_000)
    with pytest.raises(PartyFailed, match=r"integrity check failed on the link (provider|dealer) -> bank"):
        run_local(_secrets, federation=federation, listen=listen, timeout_s=120)
    assert relays["bank"].flipped


def _party_cmd(fed_file, role: str, key, data, timeout: float = 5.0) -> list[str]:  # noqa: ANN001
    return [
        sys.executable, "-m", "mpc_fl.app.cli", "party", "--federation", str(fed_file), "--role", role,
        "--key", str(key), "--data", str(data), "--protocol", "plain_lr", "--connect-timeout", str(timeout),
    ]  # fmt: skip


def _files(tmp_path):  # noqa: ANN202
    from mpc_fl.runtime.federation import federation_text

    fed, keys = local_federation(("bank", "provider"), tmp_path / "keys", dealer=False)
    fed_file = tmp_path / "federation.toml"
    fed_file.write_text(federation_text(list(fed.members)))
    bank = tmp_path / "bank.csv"
    bank.write_text("id,y,a\n" + "".join(f"{i},{i % 2},{i / 10}\n" for i in range(20)))
    prov = tmp_path / "provider.csv"
    prov.write_text("id,b\n" + "".join(f"{i},{i / 7}\n" for i in range(20)))
    return fed, keys, fed_file, bank, prov


def test_a_key_that_is_not_the_pinned_one_cannot_start(tmp_path):
    fed, keys, fed_file, bank, _ = _files(tmp_path)
    proc = subprocess.run(
        _party_cmd(fed_file, "bank", keys["provider"], bank), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "is not 'bank''s key" in proc.stderr and "Traceback" not in proc.stderr


def _bank_against_an_impostor(tmp_path, timeout: int, listen_elsewhere: bool):  # noqa: ANN001, ANN202
    """The real bank, and an impostor "provider" with its own key that passes its own start-up check
    because it runs from a forged copy of the federation file pinning its certificate."""
    from mpc_fl.runtime.federation import Member, federation_text, free_port

    fed, keys, fed_file, bank, prov = _files(tmp_path)
    impostor_key, impostor_cert = make_identity("provider", tmp_path / "impostor")
    own = fed.member("provider")
    port = free_port() if listen_elsewhere else own.port
    forged = tmp_path / "forged.toml"
    forged.write_text(
        federation_text([fed.member("bank"), Member("provider", own.host, port, impostor_cert.read_text())])
    )
    bank_log = tmp_path / "bank.log"
    bank_proc = subprocess.Popen(
        [*_party_cmd(fed_file, "bank", keys["bank"], bank, timeout), "--log", str(bank_log)],
        stderr=subprocess.PIPE,
        text=True,
    )
    impostor = subprocess.run(
        _party_cmd(forged, "provider", impostor_key, prov, timeout),
        capture_output=True,
        text=True,
        timeout=120,
    )
    _, bank_err = bank_proc.communicate(timeout=120)
    return bank_proc.returncode, bank_err, bank_log.read_text(), impostor


def test_an_impostor_that_dials_the_bank_is_refused(tmp_path):
    """Nothing listens at the provider's address; the impostor's own connection is the only way in."""
    start = time.monotonic()
    bank_rc, bank_err, bank_log, impostor = _bank_against_an_impostor(tmp_path, 6, listen_elsewhere=True)
    assert bank_rc == 2 and "Traceback" not in bank_err
    assert "'provider' did not connect within 6 s" in bank_err
    assert "refused a connection" in bank_log  # the details go to the log
    assert impostor.returncode == 2 and "'bank' did not connect" in impostor.stderr
    assert time.monotonic() - start < 60


def test_an_impostor_listening_at_the_providers_address_is_not_taken_for_the_provider(tmp_path):
    bank_rc, bank_err, _, impostor = _bank_against_an_impostor(tmp_path, 8, listen_elsewhere=False)
    assert bank_rc == 2 and "Traceback" not in bank_err
    assert "is not 'provider'" in bank_err, bank_err
    assert impostor.returncode == 2


def test_a_member_listens_only_on_its_own_address(tmp_path):
    import shutil
    import socket

    if shutil.which("ss") is None:
        pytest.skip("`ss` (iproute2) is not available")
    fed, keys, fed_file, bank, _ = _files(tmp_path)
    port = fed.member("bank").port
    proc = subprocess.Popen(_party_cmd(fed_file, "bank", keys["bank"], bank, 15), stderr=subprocess.DEVNULL)
    try:
        listening: list[str] = []
        for _ in range(100):
            out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
            listening = [line.split()[3] for line in out.splitlines() if line.strip()]
            if listening:
                break
            time.sleep(0.1)
        assert listening == [f"127.0.0.1:{port}"]
        ip = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
        others = [
            f.split("/")[0] for line in ip.splitlines() for f in line.split()[3:4] if not f.startswith("127.")
        ]
        for addr in others:  # the machine's other interfaces do not reach the member
            with pytest.raises(OSError), socket.create_connection((addr, port), timeout=2):
                pass
    finally:
        proc.kill()
        proc.wait()


def _minted_listener(tmp_path, fed, keys, port: int):  # noqa: ANN001, ANN202
    """A TLS listener at ``port`` presenting a fresh key's certificate naming 'provider', signed by the dealer's key."""
    import contextlib
    import datetime
    import socket
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    dealer_key = serialization.load_pem_private_key(keys["dealer"].read_bytes(), password=None)
    dealer_cert = x509.load_pem_x509_certificate(fed.member("dealer").certificate.encode())
    key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provider")]))
        .issuer_name(dealer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(dealer_key, None)  # type: ignore[arg-type]
    )
    minted = tmp_path / "minted.key"
    minted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(minted))
    listener = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        with listener:
            listener.settimeout(60)
            sock, _ = listener.accept()
            with (
                sock,
                contextlib.suppress(OSError, ssl.SSLError),
                ctx.wrap_socket(sock, server_side=True) as tls,
            ):
                tls.recv(1)

    threading.Thread(target=serve, daemon=True).start()


def test_a_certificate_a_member_minted_for_another_is_refused_in_one_line_naming_the_signer(tmp_path):
    """The dealer (a member) listens at the provider's address with a 'provider' certificate its own key signed."""
    from mpc_fl.runtime.federation import federation_text

    fed, keys = local_federation(("bank", "provider"), tmp_path / "keys", dealer=True)
    fed_file = tmp_path / "federation.toml"
    fed_file.write_text(federation_text(list(fed.members)))
    _, _, _, bank, _ = _files(tmp_path / "data")
    provider = fed.member("provider")
    _minted_listener(tmp_path, fed, keys, provider.port)
    start = time.monotonic()
    proc = subprocess.run(
        _party_cmd(fed_file, "bank", keys["bank"], bank, 30), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        f"the party listening at {provider.address} is not 'provider': it presented a certificate for "
        f"'provider' signed by member 'dealer', not 'provider''s own key" in proc.stderr
    ), proc.stderr
    assert time.monotonic() - start < 25  # well before the 30 s connect timeout


def test_members_started_in_different_link_modes_both_stop_within_seconds_naming_the_mode(tmp_path):
    fed, keys, fed_file, bank, prov = _files(tmp_path)
    start = time.monotonic()
    bank_proc = subprocess.Popen(_party_cmd(fed_file, "bank", keys["bank"], bank, 60), stderr=subprocess.PIPE, text=True)  # fmt: skip
    prov_proc = subprocess.run(
        [*_party_cmd(fed_file, "provider", keys["provider"], prov, 60), "--insecure-cleartext"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _, bank_err = bank_proc.communicate(timeout=120)
    elapsed = time.monotonic() - start
    assert bank_proc.returncode == 2 and prov_proc.returncode == 2
    assert "Traceback" not in bank_err + prov_proc.stderr
    assert "'provider' at 127.0.0.1:" in bank_err and "speaks cleartext (it runs with --insecure-cleartext)" in bank_err, bank_err  # fmt: skip
    assert "'bank' at 127.0.0.1:" in prov_proc.stderr and "speaks TLS, but this member runs with --insecure-cleartext" in prov_proc.stderr, prov_proc.stderr  # fmt: skip
    assert elapsed < 40  # the connect timeout is 60 s; process start-up takes a few seconds each
