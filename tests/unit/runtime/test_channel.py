"""Channel: every message is typed by kind and phase, so parties out of step fail naming both."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.runtime.channel import TUNNEL, LocalChannel
from mpc_fl.runtime.errors import ProtocolMismatchError

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
