"""OT-based private set intersection (RR22 or KKRT) from SecretFlow's PSI library.

Why: ECDH-PSI costs two group exponentiations per id and per party (255 s for 1,000,000 ids
per side on this machine, benchmarks/results/psi.json). OT-extension PSI replaces them with symmetric-key work: RR22
(Raghuraman and Rindal, CCS 2022; VOLE + OKVS) and KKRT (Kolesnikov et al., CCS 2016; batched
OPRF from OT extension) align a million ids per side in seconds. We do not write our own: the
``spu`` wheel ships SecretFlow's maintained implementation (``libpsi``), loaded by
:mod:`mpc_fl.psi._libpsi`.

Transport: the library speaks brpc over its own TCP sockets. Both parties route them through a
:class:`~mpc_fl.runtime.tunnel.Tunnel` over the channel, so every byte travels on the parties'
TLS links (identity from keys), is counted by the ledger under ``"alignment"`` and is shaped by
link emulation. The library listens on loopback only.

Protocol (both parties call :func:`run_ot_psi` with the same code)
------------------------------------------------------------------
0. Both send a header: protocol tag, set size, library version, receiver rule. By default the
   party with the larger set is the RR22/KKRT *receiver* (ties: the role that sorts first),
   the other the *sender*: the sender's set is what crosses the wire, so this is faster.
1. The library runs the PSI; the receiver learns the intersection and sends it to the sender
   (``broadcast_result``), so both parties end with the same output as ECDH-PSI.
2. Both sides order the common rows by the encoded id (a function of the intersection only,
   which both parties know), so both get the same row order without sending any id.

Ids are encoded as hex of utf-8 ``str(id)`` (the same canonical form as ECDH-PSI), so any id,
commas and quotes included, survives the library's CSV input.

Threat model and what each party learns
---------------------------------------
Semi-honest parties; the library's assumptions (RR22: LPN-based silent VOLE, random-oracle
OKVS hashing; KKRT: OT extension with a pseudorandom code). Each party learns exactly what it
learns from ECDH-PSI: the peer's set size, the intersection (as positions in its own list)
and the aligned order (sorted by encoded id).

One addition was needed for that. The library's "equal inputs" shortcut sends a 32-byte hash
of the whole input set to the peer, in every mode its Python binding offers. That lets a
peer confirm a guess of our entire customer list. So each party adds one decoy key of 128
secret random bits to its input (never an encoded id, so it never joins the intersection):
the hash then depends on a value the peer cannot guess. The test
``tests/integration/test_ot_psi.py`` plays a peer that records everything it receives and
looks for any random-looking value of the library's messages that repeats across runs on the
same input set and never occurs on another set: it finds the hash without the decoy and
nothing with it.

Not covered: malicious parties (RR22 has a malicious variant; the library's is not exposed
here), and a party choosing its input set to probe for a customer, which no PSI prevents.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mpc_fl.psi._libpsi import SPU_VERSION, load
from mpc_fl.psi.ecdh import PSIResult, canonical_ids
from mpc_fl.runtime.channel import Channel
from mpc_fl.runtime.federation import free_port
from mpc_fl.runtime.tunnel import Tunnel

__all__ = ["OT_PROTOCOLS", "run_ot_psi"]

PHASE = "alignment"
OT_PROTOCOLS = ("rr22", "kkrt")
_TAG = "mpc_fl/psi/{}/v1"
#: Add one secret random key to our input (see "what each party learns").
CONCEAL_INPUT_DIGEST = True
#: How long the library waits for one message from the peer before it gives up.
RECV_TIMEOUT_MS = 600_000


#: One library run per process at a time: two at once in one process crashed it (a test ran
#: both parties as threads). Parties are separate processes, so this costs nothing.
_one_run = threading.Lock()
_exit_silenced = False


def _silence_library_at_exit() -> None:
    """The library logs from static destructors at process exit; send fds 1 and 2 to /dev/null then."""
    global _exit_silenced
    if not _exit_silenced:

        def silence() -> None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)

        atexit.register(silence)
        _exit_silenced = True


@contextmanager
def _library_output(workdir: Path) -> Iterator[Path]:
    """While the library runs: its console logging goes to a log in ``workdir``, its scratch files there too.

    Why at the fd and environment level: the library's loggers are C++ and ignore Python's
    streams and its Python-side logging options, and it puts scratch files in ``$TMPDIR``.
    ``workdir`` is private (0700) and removed after the run, scratch files included.
    """
    log, scratch = workdir / "library.log", workdir / "scratch"
    scratch.mkdir(mode=0o700)
    _silence_library_at_exit()
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err, tmpdir = os.dup(1), os.dup(2), os.environ.get("TMPDIR")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ["TMPDIR"] = str(scratch)
    try:
        yield log
    finally:
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        if tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = tmpdir
        _remove_trace_files(log)


def _remove_trace_files(log: Path) -> None:
    """The library writes a timing trace to /tmp/psi_<id>.trace on every run (whatever $TMPDIR
    says); remove those this process's runs wrote."""
    if log.exists():
        for path in re.findall(r"Trace has been written to (/tmp/psi_[\w-]+\.trace)", log.read_text()):
            Path(path).unlink(missing_ok=True)


def _swap_header(channel: Channel, peer: str, header: dict) -> dict:
    got = channel.exchange_json(peer, header)
    if not isinstance(got, dict) or got.get("protocol") != header["protocol"]:
        raise ValueError(f"peer {peer!r} does not speak {header['protocol']}: header {got!r}")
    for field in ("library", "receiver"):
        if got.get(field) != header[field]:
            raise ValueError(
                f"peer {peer!r} has PSI {field} {got.get(field)!r}, this party {header[field]!r}"
            )
    n = got.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"peer {peer!r} sent an invalid set size: {n!r}")
    return got


def _run_library(
    libspu,
    libpsi,
    workdir: Path,
    src: Path,
    ranks: list[str],
    me: int,
    receiver: int,
    protocol: str,
    tunnel: Tunnel,
    brpc_port: int,
) -> None:
    desc = libspu.link.Desc()
    desc.id = "mpc_fl-psi"
    for rank, role in enumerate(ranks):
        port = brpc_port if rank == me else tunnel.port
        desc.add_party(role, f"127.0.0.1:{port}")
    desc.brpc_channel_connection_type = "single"
    desc.recv_timeout_ms = RECV_TIMEOUT_MS
    lctx = libspu.link.create_brpc(desc, me)
    try:
        config = libpsi.PsiExecuteConfig(
            protocol_conf=libpsi.PsiProtocolConfig(
                protocol=getattr(libpsi.PsiProtocol, f"PROTOCOL_{protocol.upper()}"),
                receiver_rank=receiver,
                broadcast_result=True,
            ),
            input_params=libpsi.InputParams(path=str(src), selected_keys=["k"], keys_unique=True),
            output_params=libpsi.OutputParams(path=str(workdir / "common.csv"), disable_alignment=False),
        )
        libpsi.psi_execute(config, lctx)
        lctx.barrier()  # neither side stops its link while the other still needs it
    finally:
        lctx.stop_link()


def _run_with_tunnel(
    channel: Channel,
    peer: str,
    libspu,  # noqa: ANN001
    libpsi,  # noqa: ANN001
    workdir: Path,
    src: Path,
    ranks: list[str],
    me: int,
    receiver_rank: int,
    protocol: str,
) -> list[str]:
    """Run the library in a worker thread behind a tunnel; return the common encoded ids (sorted)."""
    failure: list[BaseException] = []
    done = threading.Event()
    brpc_port = free_port()  # below the ephemeral range, where no tunnel or dial can take it
    with Tunnel(channel, peer, target_port=brpc_port) as tunnel:

        def work() -> None:
            try:
                _run_library(
                    libspu, libpsi, workdir, src, ranks, me, receiver_rank, protocol, tunnel, brpc_port
                )
            except BaseException as err:
                failure.append(err)
            finally:
                done.set()

        with _library_output(workdir) as log:
            threading.Thread(target=work, daemon=True, name="ot-psi").start()
            # The library blocks in C++; watch the tunnel so a lost peer fails now.
            while not done.wait(0.2):
                if tunnel.failed is not None:
                    raise tunnel.failed
            if failure:
                tail = " | ".join(log.read_text().strip().splitlines()[-3:]) if log.exists() else ""
                raise RuntimeError(
                    f"OT-PSI ({protocol}) with {peer!r} failed: {failure[0]} [{tail}]"
                ) from failure[0]
    return [k.strip('"') for k in (workdir / "common.csv").read_text().split("\n")[1:] if k]


def run_ot_psi(
    channel: Channel,
    ids: Sequence | np.ndarray,
    peer: str,
    *,
    protocol: str = "rr22",
    receiver: str = "larger",
) -> PSIResult:
    """Intersect ``ids`` with the peer's ids by RR22 or KKRT; both parties call this symmetrically.

    ``receiver``: which set's holder plays the library's receiver, ``"larger"`` (default: the
    faster choice when sizes differ; RR22 with 100,000 against 10,000,000 ids took 42 s this way
    and 52 s the other, benchmarks/test_psi.py) or ``"smaller"``. Both parties end with the same
    output either way (the receiver sends the intersection to the sender).
    """
    if protocol not in OT_PROTOCOLS:
        raise ValueError(f"unknown OT-PSI protocol {protocol!r}; choose from {OT_PROTOCOLS}")
    if receiver not in ("smaller", "larger"):
        raise ValueError(f"receiver must be 'smaller' or 'larger', got {receiver!r}")
    libspu, libpsi = load()  # fail before talking to the peer if the library is missing
    if not _one_run.acquire(blocking=False):
        raise RuntimeError("an OT-PSI is already running in this process; run parties as separate processes")
    try:
        return _run_ot_psi(channel, ids, peer, protocol, receiver, libspu, libpsi)
    finally:
        _one_run.release()


def _run_ot_psi(
    channel: Channel,
    ids: Sequence | np.ndarray,
    peer: str,
    protocol: str,
    receiver: str,
    libspu,  # noqa: ANN001
    libpsi,  # noqa: ANN001
) -> PSIResult:
    raw = canonical_ids(ids)
    keys = [k.hex() for k in raw]
    n = len(keys)
    ranks = sorted([channel.role, peer])
    me = ranks.index(channel.role)
    with tempfile.TemporaryDirectory(prefix="mpc_fl-psi-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o700)
        # The slow local work (writing the library's input) comes before the parties synchronise,
        # so neither side's library waits long for the other's to start.
        src = workdir / "ids.csv"
        # The decoy is not hex, so it never equals an encoded id; the peer's decoy is independent.
        decoy = [f"z{secrets.token_hex(16)}"] if CONCEAL_INPUT_DIGEST else []
        src.write_text("k\n" + "\n".join(keys + decoy) + "\n")
        with channel.phase(PHASE):
            header = {
                "protocol": _TAG.format(protocol),
                "library": f"spu {SPU_VERSION}",
                "receiver": receiver,
                "n": n,
            }
            n_peer = _swap_header(channel, peer, header)["n"]
            sizes = {channel.role: n, peer: n_peer}
            sign = 1 if receiver == "smaller" else -1  # receiver: the min of sign * size (ties: rank 0)
            receiver_rank = min(range(2), key=lambda r: (sign * sizes[ranks[r]], r))
            common = _run_with_tunnel(
                channel, peer, libspu, libpsi, workdir, src, ranks, me, receiver_rank, protocol
            )
    index = {k: i for i, k in enumerate(keys)}
    rows = np.fromiter((index[k] for k in common if k in index), dtype=np.int64)
    return PSIResult(indices=rows, n_self=n, n_peer=n_peer)
