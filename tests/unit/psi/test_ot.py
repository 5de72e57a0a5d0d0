"""OT-PSI (RR22, KKRT): correct intersection, same order on both sides, clear errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mpc_fl.psi.ot as ot
from mpc_fl.psi import _libpsi
from mpc_fl.psi.barrier import end_of_alignment
from mpc_fl.psi.ecdh import PSIResult
from mpc_fl.psi.ot import run_ot_psi
from mpc_fl.runtime.channel import LocalChannel
from mpc_fl.runtime.local import PartyFailed, run_local
from tests.budget import budget_s

ROLES = ("bank", "provider")


def run_pair(ids_bank, ids_provider, *, kw_bank=None, kw_provider=None, **kw) -> tuple:
    """Both parties as separate processes over TLS links (the library must not run twice in one process)."""

    def fn(session):  # noqa: ANN001, ANN202
        from mpc_fl.psi.ot import run_ot_psi

        bank = session.role == "bank"
        mine, extra = (ids_bank, kw_bank) if bank else (ids_provider, kw_provider)
        r = run_ot_psi(session.channel, mine, "provider" if bank else "bank", **{**kw, **(extra or {})})
        return {"indices": r.indices, "n_self": r.n_self, "n_peer": r.n_peer}

    out = run_local(fn, uses_crypten=False, dealer=False, timeout_s=budget_s(5, processes=2))
    rb, rp = (PSIResult(**out[r]["result"]) for r in ROLES)
    return rb, rp, out


def check(ids_bank, ids_provider, rb: PSIResult, rp: PSIResult) -> None:
    bank = [str(x) for x in ids_bank]
    prov = [str(x) for x in ids_provider]
    expected = set(bank) & set(prov)
    got_b = [bank[i] for i in rb.indices]
    got_p = [prov[i] for i in rp.indices]
    assert set(got_b) == expected and len(got_b) == len(expected)
    assert got_b == got_p  # same rows in the same order on both sides
    assert (rb.n_self, rb.n_peer, rp.n_self, rp.n_peer) == (len(bank), len(prov), len(prov), len(bank))


@pytest.mark.parametrize("protocol", ["rr22", "kkrt"])
def test_half_overlap(protocol):
    rng = np.random.default_rng(0)
    bank = rng.permutation(np.arange(0, 3000))
    prov = rng.permutation(np.arange(1500, 4500))
    rb, rp, _ = run_pair(bank, prov, protocol=protocol)
    check(bank, prov, rb, rp)
    assert len(rb.indices) == 1500


def test_traffic_is_booked_under_alignment():
    _, _, out = run_pair(np.arange(1000), np.arange(500, 1500))
    for role in ROLES:
        assert out[role]["ledger"]["by_phase"]["alignment"]["bytes_sent"] > 10_000


def test_unbalanced_sets_either_way():
    rng = np.random.default_rng(1)
    big = rng.choice(10**9, size=5000, replace=False)
    small = np.concatenate([big[:150], rng.choice(10**9, size=50, replace=False) + 10**9])
    for bank, prov in [(small, big), (big, small)]:
        rb, rp, _ = run_pair(bank, prov)
        check(bank, prov, rb, rp)


def test_any_id_text_survives():
    bank = ["a,b", 'quote"d', "newline\nid", "ünï", "7", "plain"]
    prov = ["7", "ünï", "a,b", "other", "newline\nid", 'quote"d']
    rb, rp, _ = run_pair(bank, prov)
    check(bank, prov, rb, rp)


def test_no_overlap_gives_empty_result():
    rb, rp, _ = run_pair(np.arange(100), np.arange(100) + 1000)
    assert len(rb.indices) == len(rp.indices) == 0


def test_duplicates_refused_before_any_traffic():
    chans = LocalChannel.create(ROLES)
    with pytest.raises(ValueError, match="duplicate id '3'"):
        run_ot_psi(chans["bank"], [1, 2, 3, 3], "provider")
    assert chans["bank"].ledger.total().bytes_sent == 0


def test_protocol_mismatch_is_named():
    with pytest.raises(PartyFailed, match="does not speak mpc_fl/psi/(rr22|kkrt)/v1"):
        run_pair(np.arange(10), np.arange(10), kw_bank={"protocol": "rr22"}, kw_provider={"protocol": "kkrt"})


def test_missing_library_says_how_to_install(monkeypatch):
    monkeypatch.setattr(_libpsi, "_loaded", None)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "spu" else real(name, *a)
    )
    with pytest.raises(_libpsi.LibPsiMissing, match=r"pip install --no-deps spu==0\.9\.5"):
        run_ot_psi(LocalChannel.create(ROLES)["bank"], [1, 2], "provider")


def test_smaller_set_as_receiver_gives_the_same_output():
    rng = np.random.default_rng(2)
    big = rng.choice(10**9, size=2000, replace=False)
    small = big[:300]
    rb, rp, _ = run_pair(small, big, receiver="smaller")
    check(small, big, rb, rp)


def test_receiver_rule_mismatch_is_named():
    with pytest.raises(PartyFailed, match="PSI receiver"):
        run_pair(np.arange(10), np.arange(10), kw_bank={"receiver": "smaller"})


def test_two_runs_in_one_process_are_independent():
    """The library runs in its own process per PSI, so two at once in one process no longer collide."""
    chans = LocalChannel.create(ROLES)
    with ThreadPoolExecutor(2) as ex:
        fb = ex.submit(run_ot_psi, chans["bank"], np.arange(0, 300), "provider")
        fp = ex.submit(run_ot_psi, chans["provider"], np.arange(200, 500), "bank")
        rb, rp = fb.result(timeout=120), fp.result(timeout=120)
    check(np.arange(0, 300), np.arange(200, 500), rb, rp)


def _header(n: int) -> dict:
    return {"protocol": "mpc_fl/psi/rr22/v1", "library": "spu 0.9.5", "receiver": "larger", "n": n}


def test_a_crash_in_the_library_is_reported_as_such_naming_the_party(monkeypatch):
    """Positive control: a library process that dies of SIGSEGV, as one did under load."""

    def crashing(workdir, config):  # noqa: ANN001, ANN202
        log = workdir / "library.log"
        log.write_text("Fatal Python error: Segmentation fault\n")
        code = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
        return subprocess.Popen([sys.executable, "-c", code]), log

    monkeypatch.setattr(ot, "_start_library", crashing)
    chans = LocalChannel.create(ROLES)
    with chans["provider"].phase("alignment"):
        chans["provider"].send_json("bank", _header(10))
    with pytest.raises(ot.PSILibraryError) as err:
        run_ot_psi(chans["bank"], np.arange(10), "provider")
    assert "bank: the PSI library (rr22, with 'provider') crashed (killed by SIGSEGV)" in str(err.value)
    assert "Segmentation fault" in str(err.value)


def test_alignment_ends_with_a_barrier_that_compares_the_intersections():
    """A peer whose intersection differs (or that is not done) stops the run at the barrier."""
    chans = LocalChannel.create(ROLES)
    with chans["provider"].phase("alignment"):
        chans["provider"].send_json("bank", {"alignment": "done", "n_common": 2, "digest": "0" * 64})
    with chans["bank"].phase("alignment"), pytest.raises(ValueError, match="ended differently"):
        end_of_alignment(chans["bank"], "provider", [b"1", b"2"])


def _sockets(pid: int) -> set[str]:
    """Inodes of the sockets process ``pid`` holds now."""
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(link[8:-1])
    except OSError:
        pass
    return out


def _inet_inodes() -> set[str]:
    """Inodes of every TCP and UDP socket of this machine (IPv4 and IPv6)."""
    out = set()
    for name in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{name}") as fh:
            out |= {line.split()[9] for line in list(fh)[1:]}
    return out


def _watch_library_sockets(monkeypatch, seen: dict[int, set[str]]) -> threading.Event:  # noqa: ANN001
    """Record the sockets of every library process started from now on, every 5 ms."""
    started: list[int] = []
    real = ot._start_library

    def start(workdir, config):  # noqa: ANN001, ANN202
        proc, log = real(workdir, config)
        started.append(proc.pid)
        return proc, log

    monkeypatch.setattr(ot, "_start_library", start)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.005):
            inet = _inet_inodes()
            for pid in started:
                mine = _sockets(pid)
                seen.setdefault(pid, set()).update(mine & inet)
                seen.setdefault(-pid, set()).update(mine)  # all of them, to show the watch saw some

    threading.Thread(target=watch, daemon=True).start()
    return stop


def test_the_library_uses_no_network_socket(monkeypatch):
    """The library's link is Unix sockets only: no TCP or UDP port another local user could find."""
    seen: dict[int, set[str]] = {}
    stop = _watch_library_sockets(monkeypatch, seen)
    chans = LocalChannel.create(ROLES)
    with ThreadPoolExecutor(2) as ex:
        fb = ex.submit(run_ot_psi, chans["bank"], np.arange(0, 2000), "provider")
        fp = ex.submit(run_ot_psi, chans["provider"], np.arange(1000, 3000), "bank")
        fb.result(timeout=120), fp.result(timeout=120)
    stop.set()
    workers = [p for p in seen if p > 0]
    assert len(workers) == 2 and all(seen[-p] for p in workers)  # both watched, sockets seen
    assert all(seen[p] == set() for p in workers), seen


def test_positive_control_the_watch_sees_a_tcp_port():
    """The same watch on a process that listens on loopback TCP, as the library used to."""
    code = (
        "import socket, time; s = socket.create_server(('127.0.0.1', 0)); print(1, flush=True); time.sleep(5)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()
        assert _sockets(proc.pid) & _inet_inodes()
    finally:
        proc.kill()
        proc.wait()
