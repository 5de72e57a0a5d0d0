"""Who takes part, where each party listens, and the certificate that identifies it.

A federation file (TOML) lists the members in rank order: the bank (rank 0, CrypTen's
party 0), then the providers, then the Beaver-triple dealer when there is one (rank n)::

    version = 1
    [[member]]
    role = "bank"
    address = "10.0.0.1:7100"
    certificate = '''
    -----BEGIN CERTIFICATE-----
    ...'''

Every party reads the same file; it holds only public information. A member's identity
is its certificate: a connection is accepted as ``role`` only if the peer proves
possession of the key behind that exact certificate (:mod:`mpc_fl.runtime.mesh`).
"""

from __future__ import annotations

import datetime
import secrets
import socket
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from mpc_fl.runtime.identity import (
    IdentityError,
    certificate_der,
    certificate_path,
    key_path,
    make_identity,
    signer_of,
)
from mpc_fl.runtime.roles import BANK, DEALER

FORMAT_VERSION = 1
#: Largest frame a member accepts from a peer (16 GiB). Legitimate frames measured at 24,000
#: training rows (default_credit): SS-GBDT 67 MB (the fixed mask's E blocks, at most ~64 MiB at
#: any size), 82 MB with ``mask=generic`` (n x D x 8 bytes: ~3.4 GB at a million rows),
#: SecureBoost 12.6 MB (one ciphertext per row: ~0.5 GB at a million), SS-LR 4.2 MB. A receiver
#: allocates as the bytes arrive, so a peer's announced length alone never reserves memory.
MAX_FRAME_BYTES = 1 << 34


class FederationError(ValueError):
    """The federation file is missing, malformed, or does not fit the run."""


@dataclass(frozen=True)
class Member:
    role: str
    host: str
    port: int
    certificate: str  # PEM

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FederationError(f"address {text!r} is not host:port")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Federation:
    """The members in rank order, plus the run's timeouts and link mode."""

    members: tuple[Member, ...]
    connect_timeout_s: float = 60.0
    op_timeout_s: float = 1800.0
    #: DEBUG ONLY: plain TCP, no authentication or encryption (``--insecure-cleartext``)
    insecure_cleartext: bool = False
    #: EXPERIMENTS: every outgoing link delays each frame by half this round-trip time
    #: (``--emulate-rtt-ms``) and paces it at ``emulated_mbit`` Mbit/s (0: unpaced); see
    #: :class:`mpc_fl.runtime.mesh.LinkEmulator`
    emulated_rtt_ms: float = 0.0
    emulated_mbit: float = 0.0
    #: a peer announcing a longer frame breaks its link at once (and a longer send is refused)
    max_frame_bytes: int = MAX_FRAME_BYTES

    def __post_init__(self) -> None:
        roles = [m.role for m in self.members]
        if len(set(roles)) != len(roles):
            raise FederationError(f"a role appears twice in the federation: {roles}")
        if not roles or roles[0] != BANK:
            raise FederationError(
                f"the first member must be the bank (the label holder, rank 0); got {roles}"
            )
        if DEALER in roles[:-1]:
            raise FederationError("the dealer must be the last member")
        if len([r for r in roles if r != DEALER]) < 2:
            raise FederationError("a federation needs the bank and at least one provider")
        if self.emulated_rtt_ms < 0 or self.emulated_mbit < 0:
            raise FederationError("the emulated round-trip time and bandwidth must be >= 0")
        if not 0 < self.max_frame_bytes < 1 << 63:
            raise FederationError(
                f"max_frame_bytes must be between 1 and 2**63 - 1; got {self.max_frame_bytes}"
            )

    @property
    def roles(self) -> tuple[str, ...]:
        """The computing parties (everyone but the dealer), in rank order."""
        return tuple(m.role for m in self.members if m.role != DEALER)

    @property
    def dealer(self) -> bool:
        return self.members[-1].role == DEALER

    @property
    def n_parties(self) -> int:
        return len(self.roles)

    @property
    def world_size(self) -> int:
        return len(self.members)

    def member(self, role: str) -> Member:
        for m in self.members:
            if m.role == role:
                return m
        raise FederationError(
            f"{role!r} is not a member of this federation ({[m.role for m in self.members]})"
        )

    def rank_of(self, role: str) -> int:
        return [m.role for m in self.members].index(self.member(role).role)

    def name_of(self, rank: int) -> str:
        return self.members[rank].role

    @property
    def emulates_network(self) -> bool:
        return self.emulated_rtt_ms > 0 or self.emulated_mbit > 0

    def without_dealer(self) -> Federation:
        return replace(self, members=tuple(m for m in self.members if m.role != DEALER))


def load_federation(path: Path, **settings: object) -> Federation:
    """Read and check a federation file; ``settings`` override the timeouts and link mode."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FederationError(
            f"{path}: no such federation file (make one with `mpc-fl federation`)"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise FederationError(f"{path}: not a valid federation file ({err})") from None
    if doc.get("version") != FORMAT_VERSION:
        raise FederationError(
            f"{path}: federation format version {doc.get('version')!r}; expected {FORMAT_VERSION}"
        )
    members = []
    for i, entry in enumerate(doc.get("member", [])):
        missing = {"role", "address", "certificate"} - set(entry)
        if missing:
            raise FederationError(f"{path}: member {i + 1} lacks {sorted(missing)}")
        host, port = parse_address(entry["address"])
        try:
            der = certificate_der(entry["certificate"])
        except IdentityError as err:
            raise FederationError(f"{path}: member {entry['role']!r}: {err}") from None
        if signer_of(der, {entry["role"]: entry["certificate"]}) is None:  # each pin is its own anchor
            raise FederationError(
                f"{path}: member {entry['role']!r}: its certificate is not self-signed by its own key "
                f"(pin the certificate `mpc-fl keygen` made for it)"
            )
        _check_validity(path, entry["role"], der)
        members.append(Member(entry["role"], host, port, entry["certificate"].strip() + "\n"))
    return Federation(tuple(members), **settings)  # type: ignore[arg-type]


def _check_validity(path: Path, role: str, der: bytes) -> None:
    """Refuse a pinned certificate outside its validity period (the dialler builds no chain to check it)."""
    cert = x509.load_der_x509_certificate(der)
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise FederationError(
            f"{path}: member {role!r}: its certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d}, not now (make new keys with `mpc-fl keygen`)"
        )


def federation_text(members: list[Member]) -> str:
    lines = [
        "# mpc_fl federation: members in rank order (bank first, dealer last).",
        "# Public information only: every party reads this file; private keys stay with their owners.",
        f"version = {FORMAT_VERSION}",
    ]
    for m in members:
        lines += ["", "[[member]]", f'role = "{m.role}"', f'address = "{m.address}"']
        lines += ["certificate = '''", m.certificate.strip(), "'''"]
    return "\n".join(lines) + "\n"


def write_federation(path: Path, members: list[Member]) -> Federation:
    fed = Federation(tuple(members))  # validates
    Path(path).write_text(federation_text(members))
    return fed


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on, below the kernel's ephemeral range.

    Why below it: a port handed out by ``bind(0)`` comes from the ephemeral range, where the
    outgoing connections of any process (every dial of every member) also take their local
    ports, so it can be taken again before the member that was given it listens there.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = 10_000 + secrets.randbelow(max(1, low - 10_000))
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port found on {host} below {low}")


def local_federation(
    roles: tuple[str, ...], key_dir: Path, *, dealer: bool = True, host: str = "127.0.0.1"
) -> tuple[Federation, dict[str, Path]]:
    """A federation on one machine: a fresh key pair per member, each listening on a free port.

    Returns the federation and each member's private key file (each party reads only its own).
    The keys are the run's own: keys an earlier run left in ``key_dir`` are replaced, so a run
    into the same folder starts cleanly (``mpc-fl keygen`` still refuses to overwrite a key).
    """
    members, keys = [], {}
    for role in (*roles, *((DEALER,) if dealer else ())):
        key_path(key_dir, role).unlink(missing_ok=True)
        certificate_path(key_dir, role).unlink(missing_ok=True)
        key_file, cert = make_identity(role, key_dir)
        members.append(Member(role, host, free_port(host), cert.read_text()))
        keys[role] = key_file
    return Federation(tuple(members)), keys


__all__ = [
    "BANK",
    "DEALER",
    "MAX_FRAME_BYTES",
    "Federation",
    "FederationError",
    "Member",
    "certificate_path",
    "free_port",
    "load_federation",
    "local_federation",
    "parse_address",
    "write_federation",
]
