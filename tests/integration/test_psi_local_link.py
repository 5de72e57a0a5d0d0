"""Attack on the PSI library's local link: another local process finds its sockets and pushes into them.

Claim (mpc_fl/psi/ot.py, "The local link"): only the party's own library can use its PSI
sockets. Processes of other users cannot connect at all; any other process that reaches the
tunnel (the same user, root) stops the run with a line naming the PSI tunnel.

The intruder (tests/attacks/local_intruder.py) polls /proc/net/unix and sends brpc Pushes
claiming each party's rank into every socket of the run, as the finding did over loopback TCP.
Positive controls, so each test provably could fail: with the run's directory and sockets
made world-accessible, the same intruder as nobody gets in and is caught by the credential
check; with the credential check disabled as well, its Push is accepted by the peer's library
across the tunnel, which is what the finding saw.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mpc_fl.psi.ot as ot
import mpc_fl.runtime.tunnel as tunnel
from mpc_fl.runtime.local import PartyFailed, run_local
from tests.attacks.local_intruder import NOBODY, Intruder, Outcome
from tests.budget import budget_s

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="becoming user nobody needs root")

BANK, PROVIDER = np.arange(0, 3000), np.arange(1500, 4500)
FLAGGED = (
    r"an unexpected local process \(pid (\d+), uid (\d+)\) connected to PSI tunnel #0 with '(bank|provider)'"
)


@pytest.fixture
def base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The runs' $TMPDIR: our own, so the intruder attacks only these runs; 0755 like /tmp."""
    path = Path(tempfile.mkdtemp(prefix="psi-link-", dir="/tmp"))
    path.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(path))  # the forked parties inherit it
    yield path
    for sub in sorted(path.rglob("*"), reverse=True):
        sub.unlink() if not sub.is_dir() or sub.is_symlink() else sub.rmdir()
    path.rmdir()


def _open_up(base: Path, stop: threading.Event) -> None:
    """Mutant: make the run's directory and its sockets world-accessible as soon as they exist."""
    while not stop.wait(0.001):
        for sock in base.glob("mpc_fl-psi-*/*.sock"):
            try:
                sock.parent.chmod(0o777)
                sock.chmod(0o777)
            except OSError:
                pass  # unlinked meanwhile


def _run(base: Path, *, world_accessible: bool = False) -> dict:
    def fn(session):  # noqa: ANN001, ANN202
        stop = threading.Event()
        if world_accessible:
            threading.Thread(target=_open_up, args=(base, stop), daemon=True).start()
        bank = session.role == "bank"
        try:
            r = ot.run_ot_psi(session.channel, BANK if bank else PROVIDER, "provider" if bank else "bank")
        finally:
            stop.set()
        return len(r.indices)

    return run_local(fn, uses_crypten=False, dealer=False, timeout_s=budget_s(5, processes=2))


def _attacked(
    base: Path, uid: int | None, only: str = "", **kw: bool
) -> tuple[dict | PartyFailed, dict[str, Outcome]]:
    intruder = Intruder(f"{base}/mpc_fl-psi-", uid=uid, only=only)
    try:
        outcome: dict | PartyFailed = _run(base, **kw)
    except PartyFailed as err:
        outcome = err
    return outcome, intruder.report()


def _tunnels(report: dict[str, Outcome]) -> dict[str, Outcome]:
    return {p: o for p, o in report.items() if Path(p).name.startswith("tunnel-")}


def test_another_user_cannot_reach_the_library_link(base):
    out, report = _attacked(base, NOBODY)
    assert not isinstance(out, PartyFailed), out
    assert out["bank"]["result"] == out["provider"]["result"] == 1500
    assert len(_tunnels(report)) == 2  # it saw both parties' tunnels...
    assert all(o.denied > 0 for o in _tunnels(report).values())  # ...tried them while they were there...
    assert not any(o.connected for o in report.values()), report  # ...and reached no socket at all


def test_positive_control_world_accessible_link_lets_nobody_in_and_is_flagged(base):
    """Mutant: the run's directory and sockets world-accessible. The same intruder gets in."""
    out, report = _attacked(base, NOBODY, world_accessible=True)
    assert any(o.connected for o in _tunnels(report).values()), report
    assert isinstance(out, PartyFailed)
    found = re.search(FLAGGED, str(out))
    assert found, str(out)
    assert int(found.group(2)) == NOBODY


def test_a_same_user_process_in_the_tunnel_stops_the_run_naming_it(base):
    """Same user (root here): the directory does not stop it; the credential check does."""
    intruder = Intruder(f"{base}/mpc_fl-psi-", uid=None)
    with pytest.raises(PartyFailed) as err:
        _run(base)
    report = intruder.report()
    found = re.search(FLAGGED, str(err.value))
    assert found, str(err.value)
    assert (int(found.group(1)), int(found.group(2))) == (intruder.pid, os.geteuid())
    assert not any(o.accepted for o in _tunnels(report).values()), report


def test_positive_control_without_the_credential_check_the_peer_library_takes_the_push(base, monkeypatch):
    """Mutant: any local process may use the tunnel (as the old loopback port), with room for one
    connection more than the library's.

    The intruder's Push, claiming a party's rank, crosses the tunnel and the peer's library
    accepts it: the finding, reproduced.
    """
    monkeypatch.setattr(tunnel.Tunnel, "_intruder", lambda self, sock, what: None)
    monkeypatch.setattr(ot, "LIBRARY_CONNECTIONS", ot.LIBRARY_CONNECTIONS + 1)
    out, report = _attacked(base, None, only="tunnel-")
    assert len(report) == 2 and all(o.accepted for o in report.values()), report
    assert not isinstance(out, PartyFailed), out  # and, as in the finding, the run passed
