"""OT-based private set intersection (RR22 or KKRT) from SecretFlow's PSI library.

Why: ECDH-PSI costs two group exponentiations per id and per party (255 s for 1,000,000 ids
per side on this machine, benchmarks/results/psi.json). OT-extension PSI replaces them with symmetric-key work: RR22
(Raghuraman and Rindal, CCS 2022; VOLE + OKVS) and KKRT (Kolesnikov et al., CCS 2016; batched
OPRF from OT extension) align a million ids per side in seconds. We do not write our own: the
``spu`` wheel ships SecretFlow's maintained implementation (``libpsi``), loaded by
:mod:`mpc_fl.psi._libpsi`.

Transport: the library speaks brpc over its own sockets. Both parties route them through a
:class:`~mpc_fl.runtime.tunnel.Tunnel` over the channel, so every byte travels on the parties'
TLS links (identity from keys), is counted by the ledger under ``"alignment"`` and is shaped by
link emulation. The library runs in a process of its own (:mod:`mpc_fl.psi._ot_worker`): a
crash in it is reported as a crash of the PSI library, naming the party, and leaves the
party's links and state intact.

The local link (library to party) carries no key, so only the party's own library may use it.
Both its ends are Unix sockets in the run's working directory, created 0700, never TCP ports:
processes of other users cannot connect at all. The tunnel admits exactly
:data:`LIBRARY_CONNECTIONS` connection(s), only from the library's process (checked by peer
credentials), then unlinks its socket; the party itself makes the connection into its
library's server, checks that it is the library's process and unlinks that socket too. Any
other process found on either socket stops the run with a line naming the PSI tunnel
(``tests/integration/test_psi_local_link.py`` tries as user nobody and as this user). Not
protected: processes of the same user and root, which can read the party's keys and data
anyway; of those, one that pushes into the library's server in the millisecond between its
binding and the party connecting, and leaves at once, goes unseen
(:mod:`mpc_fl.runtime.tunnel`).

Protocol (both parties call :func:`run_ot_psi` with the same code)
------------------------------------------------------------------
0. Both send a header: protocol tag, set size, library version, receiver rule. By default the
   party with the larger set is the RR22/KKRT *receiver* (ties: the role that sorts first),
   the other the *sender*: the sender's set is what crosses the wire, so this is faster.
1. The library runs the PSI; the receiver learns the intersection and sends it to the sender
   (``broadcast_result``), so both parties end with the same output as ECDH-PSI.
2. Both sides order the common rows by the encoded id (a function of the intersection only,
   which both parties know), so both get the same row order without sending any id.
3. Both pass :func:`end_of_alignment`: a barrier on the protocol stream that also checks both
   found the same intersection (size and hash, which the peer already knows), so training
   never starts while the peer is still in its PSI.

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

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mpc_fl.psi._libpsi import SPU_VERSION, check_installed
from mpc_fl.psi.barrier import end_of_alignment
from mpc_fl.psi.ecdh import PSIResult, canonical_ids
from mpc_fl.runtime.channel import Channel
from mpc_fl.runtime.tunnel import Tunnel

__all__ = ["OT_PROTOCOLS", "PSILibraryError", "run_ot_psi"]

PHASE = "alignment"
OT_PROTOCOLS = ("rr22", "kkrt")
_TAG = "mpc_fl/psi/{}/v1"
#: Add one secret random key to our input (see "what each party learns").
CONCEAL_INPUT_DIGEST = True
#: How long the library waits for one message from the peer before it gives up.
RECV_TIMEOUT_MS = 600_000
#: Connections the library opens to the peer per PSI (brpc, "single" connection type): one, for
#: RR22 and KKRT, either role, 10 to 200,000 ids. The tunnel takes exactly this many.
LIBRARY_CONNECTIONS = 1


class PSILibraryError(RuntimeError):
    """The native PSI library failed or crashed in its own process; the message names the party."""


def _remove_trace_files(log: Path) -> None:
    """The library writes a timing trace to /tmp/psi_<id>.trace on every run (whatever $TMPDIR
    says); remove those this run wrote."""
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


def _start_library(workdir: Path, config: dict) -> tuple[subprocess.Popen, Path]:
    """Start the library in its own process (:mod:`mpc_fl.psi._ot_worker`); its output goes to a log."""
    (workdir / "config.json").write_text(json.dumps(config))
    scratch = workdir / "scratch"  # the library puts scratch files in $TMPDIR
    scratch.mkdir(mode=0o700)
    log = workdir / "library.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mpc_fl.psi._ot_worker", str(workdir / "config.json")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(scratch)},
        )  # fmt: skip
    return proc, log


def _library_failure(
    role: str, protocol: str, peer: str, code: int, log: Path, refusals: Sequence[str] = ()
) -> PSILibraryError:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    if code < 0:
        try:
            how = f"crashed (killed by {signal.Signals(-code).name})"
        except ValueError:
            how = f"crashed (signal {-code})"
    else:
        how = f"failed (exit {code})"
    tail = " | ".join(lines[-3:])
    return PSILibraryError(
        f"{role}: the PSI library ({protocol}, with {peer!r}) {how}; this party's links and state are "
        f"intact, the run stops" + (f" [{tail}]" if tail else "") + "".join(f" ({r})" for r in refusals)
    )


def _run_with_tunnel(
    channel: Channel,
    peer: str,
    workdir: Path,
    src: Path,
    ranks: list[str],
    me: int,
    receiver_rank: int,
    protocol: str,
) -> list[str]:
    """Run the library in its own process behind a tunnel; return the common encoded ids (sorted).

    Both ends of the library's link are Unix sockets in ``workdir`` (private to this user), not
    ports: see "The local link" above.
    """
    with Tunnel(channel, peer, workdir, connections=LIBRARY_CONNECTIONS, label="PSI tunnel") as tunnel:
        config = {
            "ranks": ranks, "me": me, "receiver_rank": receiver_rank, "protocol": protocol,
            "server": str(tunnel.target), "tunnel": str(tunnel.path), "recv_timeout_ms": RECV_TIMEOUT_MS,
            "input": str(src), "output": str(workdir / "common.csv"),
        }  # fmt: skip
        proc, log = _start_library(workdir, config)
        tunnel.admit(proc.pid)  # only this process may connect to the tunnel
        try:
            while (code := proc.poll()) is None:  # watch the tunnel too, so a lost peer fails now
                if tunnel.failed is not None:
                    raise tunnel.failed
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            tunnel.library_stopped()  # a stream the peer opens from now on is refused at once
            _remove_trace_files(log)
        if code != 0:
            raise _library_failure(channel.role, protocol, peer, code, log, tunnel.refusals)
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
    check_installed()  # fail before talking to the peer if the library is missing
    return _run_ot_psi(channel, ids, peer, protocol, receiver)


def _run_ot_psi(
    channel: Channel,
    ids: Sequence | np.ndarray,
    peer: str,
    protocol: str,
    receiver: str,
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
            common = _run_with_tunnel(channel, peer, workdir, src, ranks, me, receiver_rank, protocol)
            index = {k: i for i, k in enumerate(keys)}
            rows = np.fromiter((index[k] for k in common if k in index), dtype=np.int64)
            end_of_alignment(channel, peer, [raw[i] for i in rows])
    return PSIResult(indices=rows, n_self=n, n_peer=n_peer)
