from __future__ import annotations

import numpy as np
import pytest

from mpc_fl.runtime.channel import LocalChannel
from mpc_fl.runtime.ledger import Ledger


def test_phases_are_exclusive_and_merge_sums_parties():
    led = Ledger(party="bank")
    led.record_send(10)
    with led.phase("training"):
        led.record_send(5)
        with led.phase("scoring"):
            led.record_recv(7, dealer=True)
        led.record_send(1)
    d = led.to_dict()
    assert d["by_phase"]["setup"]["bytes_sent"] == 10
    assert d["by_phase"]["training"]["bytes_sent"] == 6 and d["by_phase"]["training"]["messages_sent"] == 2
    assert d["by_phase"]["scoring"]["bytes_recv"] == 7 and d["by_phase"]["scoring"]["dealer_bytes"] == 7
    merged = Ledger.merge([d, d])
    assert merged["total"]["bytes_sent"] == 32


def test_steps_label_traffic_without_changing_phase_totals():
    led = Ledger(party="bank")
    with led.phase("training"):
        led.record_send(5)
        with led.step("gains"):
            led.record_send(3)
            led.record_round()
        with led.step("argmax"):
            led.record_recv(4)
    d = led.to_dict()
    assert d["by_phase"]["training"]["bytes_sent"] == 8 and d["by_phase"]["training"]["rounds"] == 3
    assert d["by_step"]["training/gains"]["bytes_sent"] == 3 and d["by_step"]["training/gains"]["rounds"] == 2
    assert d["by_step"]["training/argmax"]["bytes_recv"] == 4
    assert d["total"]["bytes_sent"] == 8  # steps are not counted twice
    assert Ledger.merge([d, d])["by_step"]["training/gains"]["bytes_sent"] == 6


def test_local_channel_counts_payloads_on_both_sides():
    chans = LocalChannel.create(("bank", "provider"))
    with chans["bank"].phase("training"):
        chans["bank"].send_arrays("provider", a=np.arange(5), b=np.ones((2, 2)))
        chans["bank"].send_json("provider", {"k": [1, 2]})
    with chans["provider"].phase("training"):  # a message is received in the phase it was sent in
        got = chans["provider"].recv_arrays("bank")
        assert np.array_equal(got["a"], np.arange(5)) and got["b"].shape == (2, 2)
        assert chans["provider"].recv_json("bank") == {"k": [1, 2]}
    sent = chans["bank"].ledger.to_dict()["by_phase"]["training"]["bytes_sent"]
    assert sent == chans["provider"].ledger.to_dict()["by_phase"]["training"]["bytes_recv"] > 0


def test_channel_refuses_unknown_peers_and_pickles():
    chans = LocalChannel.create(("bank", "provider"))
    with pytest.raises(ValueError, match="cannot talk"):
        chans["bank"].send_bytes("bank", b"x")
    with pytest.raises(ValueError):
        chans["bank"].send_arrays("provider", a=np.array([object()], dtype=object))
