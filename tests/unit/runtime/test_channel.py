"""Channel: every message is typed by kind and phase, so parties out of step fail naming both;
receives take a timeout, and ``broken`` tells a dead link without a receive."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mpc_fl.runtime.channel import TUNNEL, LocalChannel, MeshChannel
from mpc_fl.runtime.errors import PartyConnectionError, ProtocolMismatchError
from mpc_fl.runtime.federation import local_federation
from mpc_fl.runtime.ledger import Ledger
from mpc_fl.runtime.mesh import Mesh

ROLES = ("bank", "provider")


def test_messages_of_each_kind_round_trip_within_a_phase():
    chans = LocalChannel.create(ROLES)
    with chans["bank"].phase("training"), chans["provider"].phase("training"):
        chans["bank"].send_json("provider", {"a": 1})
        chans["bank"].send_arrays("provider", x=np.arange(3))
        chans["bank"].send_bytes("provider", b"\x8c raw")
        assert chans["provider"].recv_json("bank") == {"a": 1}
        assert chans["provider"].recv_arrays("bank")["x"].tolist() == [0, 1, 2]
        assert chans["provider"].recv_bytes("bank") == b"\x8c raw"


def test_a_message_of_another_phase_is_an_error_naming_both_phases_and_the_link():
    chans = LocalChannel.create(ROLES)
    with chans["bank"].phase("alignment"):
        chans["bank"].send_json("provider", {"late": True})
    with chans["provider"].phase("training"), pytest.raises(ProtocolMismatchError) as err:
        chans["provider"].recv_json("bank")
    text = str(err.value)
    assert "link bank -> provider" in text and "'training'" in text and "'alignment'" in text


def test_a_message_of_another_kind_is_an_error_not_a_decode_error():
    """What the SecureBoost crash was: binary bytes read where a JSON message was expected."""
    chans = LocalChannel.create(ROLES)
    chans["bank"].send_bytes("provider", b"\x8c\x00 not json")
    with pytest.raises(ProtocolMismatchError, match="expected a JSON message .* got a bytes message"):
        chans["provider"].recv_json("bank")


def test_untyped_bytes_are_refused():
    chans = LocalChannel.create(ROLES)
    chans["bank"]._send("provider", b"\x8c\x01\x02", 0)
    with pytest.raises(ProtocolMismatchError, match="not a protocol message"):
        chans["provider"].recv_bytes("bank")


def test_streams_are_independent():
    chans = LocalChannel.create(ROLES)
    chans["bank"].send_bytes("provider", b"tunnel", stream=TUNNEL)
    chans["bank"].send_json("provider", "protocol")
    assert chans["provider"].recv_json("bank") == "protocol"
    assert chans["provider"].recv_bytes("bank", stream=TUNNEL) == b"tunnel"


# ------------------------------------------------------------------ receive timeouts and the broken flag


@pytest.mark.parametrize("recv", ["recv_bytes", "recv_json", "recv_arrays"])
def test_a_receive_with_timeout_s_gives_up_after_that_long(recv):
    chans = LocalChannel.create(ROLES)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="'provider' got no message from 'bank'"):
        getattr(chans["provider"], recv)("bank", timeout_s=0.2)
    assert 0.2 <= time.monotonic() - start < 5.0  # not the default of 600 s


def test_a_receive_with_timeout_s_still_returns_a_message_that_arrives_in_time():
    chans = LocalChannel.create(ROLES)
    timer = threading.Timer(0.1, chans["bank"].send_arrays, args=("provider",), kwargs={"x": np.arange(2)})
    timer.start()
    assert chans["provider"].recv_arrays("bank", timeout_s=30)["x"].tolist() == [0, 1]
    timer.join()
    assert chans["provider"].broken is None  # an in-process channel never breaks


def _mesh_channels(tmp_path: Path) -> dict[str, MeshChannel]:
    """A bank and a provider linked over real TLS meshes in threads of this process."""
    fed, keys = local_federation(ROLES, tmp_path, dealer=False)
    fed = replace(fed, connect_timeout_s=20.0)
    meshes: dict[str, Mesh | BaseException] = {}

    def run(role: str) -> None:
        mesh = Mesh(
            fed, role, str(keys[role]), Ledger(party=role), peers=tuple(r for r in ROLES if r != role)
        )
        try:
            mesh.connect()
            meshes[role] = mesh
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            meshes[role] = err

    threads = [threading.Thread(target=run, args=(r,)) for r in ROLES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(m, Mesh) for m in meshes.values()), meshes
    return {r: MeshChannel(r, ROLES, m) for r, m in meshes.items()}


@pytest.fixture
def mesh_pair(tmp_path):  # noqa: ANN201
    chans = _mesh_channels(tmp_path)
    yield chans
    for ch in chans.values():
        ch.mesh.close(goodbye=False)


def test_a_mesh_receive_with_timeout_s_gives_up_after_that_long_and_the_link_stays_up(mesh_pair):
    bank, provider = mesh_pair["bank"], mesh_pair["provider"]
    start = time.monotonic()
    with pytest.raises(PartyConnectionError, match=r"bank: no protocol message from 'provider' within 1 s"):
        bank.recv_json("provider", timeout_s=1.0)
    assert 1.0 <= time.monotonic() - start < 6.0  # not the federation's op_timeout_s (1800 s)
    assert bank.broken is None  # a receive that timed out breaks nothing
    provider.send_arrays("bank", x=np.arange(3))
    assert bank.recv_arrays("provider", timeout_s=30)["x"].tolist() == [0, 1, 2]


def test_broken_is_the_mesh_error_once_a_peer_leaves(mesh_pair):
    bank, provider = mesh_pair["bank"], mesh_pair["provider"]
    assert bank.broken is None and provider.broken is None
    provider.mesh.close(goodbye=True)
    deadline = time.monotonic() + 10
    while bank.broken is None and time.monotonic() < deadline:  # the bank's reader sees the close
        time.sleep(0.02)
    assert isinstance(bank.broken, PartyConnectionError)
    assert bank.broken is bank.mesh.broken
    assert "'provider' closed its link" in str(bank.broken)
    with pytest.raises(PartyConnectionError, match="'provider' closed its link"):
        bank.recv_bytes("provider", timeout_s=30)  # fails at once, with the same reason
