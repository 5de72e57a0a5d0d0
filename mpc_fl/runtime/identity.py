"""A party's identity is its key pair: an Ed25519 key and a self-signed certificate naming its role.

``<role>.key`` holds the private key followed by the certificate (what TLS presents);
``<role>.crt`` holds the certificate alone, to be pasted into the federation file.

Why self-signed: the parties of a federation know each other in advance, so there is no
certificate authority to trust. Every party pins every other party's certificate in the
federation file (:mod:`mpc_fl.runtime.federation`); a TLS peer is who its certificate says
only if that exact certificate is in the file. The private key never leaves its owner's
file (created with mode 0600).

Why ``CA:FALSE``: a member's certificate must not be able to vouch for anyone else. With
``CA:TRUE`` (what ``mpc-fl keygen`` made before; such keys still work) a member could sign a
certificate naming another member that TLS chain checks accept, and only the exact pin
refused it. ``CA:FALSE`` with the key usage ``digitalSignature`` makes OpenSSL itself refuse
such chains; the exact pin stays the rule either way (:func:`signer_of` names who minted a
refused certificate).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=3650)
#: Key usage of a member certificate: TLS handshake signatures only, no certificate signing.
_SIGNING_ONLY = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


class IdentityError(ValueError):
    """A key or certificate file is missing, unreadable or does not belong to the role."""


def key_path(key_dir: Path, role: str) -> Path:
    return Path(key_dir) / f"{role}.key"


def certificate_path(key_dir: Path, role: str) -> Path:
    return Path(key_dir) / f"{role}.crt"


def make_identity(role: str, key_dir: Path) -> tuple[Path, Path]:
    """Create ``<role>.key`` (private, 0600) and ``<role>.crt`` (public, for the federation file)."""
    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True)
    kp, cp = key_path(key_dir, role), certificate_path(key_dir, role)
    if kp.exists():
        raise IdentityError(f"{kp} exists already; a party's key is made once (delete it to start over)")
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        # a self-signed certificate that the federation file pins; it can sign nothing else
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SIGNING_ONLY, critical=True)
        .sign(key, None)
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    fd = os.open(kp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem + cert_pem)
    cp.write_bytes(cert_pem)
    return kp, cp


def certificate_der(pem: str) -> bytes:
    try:
        return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    except ValueError as err:
        raise IdentityError(f"not a PEM certificate ({err})") from None


def signer_of(der: bytes, certificates: dict[str, str]) -> str | None:
    """The role (a key of ``certificates``, PEM) whose key signed the certificate ``der``; None if none did.

    Only the signature counts, not the issuer name the certificate claims: a member minting a
    certificate may write any issuer into it.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    for role, pem in certificates.items():
        issuer = x509.load_pem_x509_certificate(pem.encode())
        key = issuer.public_key()
        try:
            if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
                key.verify(cert.signature, cert.tbs_certificate_bytes)
            else:  # other key types need the issuer name to match as well
                cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return role
    return None


def subject_of(der: bytes) -> str:
    """The common name a certificate (DER) claims, for error messages."""
    try:
        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return "?"
    return str(names[0].value) if names else "?"


def fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate (DER): how logs name a key."""
    return hashlib.sha256(der).hexdigest()


def check_key_matches(key_file: Path, certificate_pem: str, role: str) -> None:
    """Refuse to start with a key file that is not the one the federation file pins for ``role``."""
    key_file = Path(key_file)
    try:
        data = key_file.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
        own = x509.load_pem_x509_certificate(data)
    except FileNotFoundError:
        raise IdentityError(
            f"{key_file}: no such key file (make one with `mpc-fl keygen --role {role}`)"
        ) from None
    except (ValueError, TypeError) as err:
        raise IdentityError(f"{key_file}: not a key file made by `mpc-fl keygen` ({err})") from None
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw) or own != cert:
        raise IdentityError(
            f"{key_file} is not {role!r}'s key: the federation file pins another certificate for {role!r}"
        )
