from __future__ import annotations

import pytest

from mpc_fl.netmodel import (
    LAN,
    WAN,
    NetworkProfile,
    predict_from_ledgers,
    predict_time,
    traffic_summary,
)
from mpc_fl.runtime.ledger import Ledger


def test_presets_are_the_documented_links():
    assert (LAN.rtt_s, LAN.bandwidth_bps) == (0.2e-3, 1e9)
    assert (WAN.rtt_s, WAN.bandwidth_bps) == (40e-3, 100e6)


def test_predict_time_adds_compute_half_rtt_per_round_and_transfer():
    # 1 s compute + 100 rounds * 20 ms + 12.5 MB * 8 / 100 Mbit/s = 1 + 2 + 1
    assert predict_time(1.0, 12_500_000, 100, WAN) == pytest.approx(4.0)
    assert predict_time(0.0, 0, 0, WAN) == 0.0
    assert predict_time(2.0, 125_000_000, 10, LAN) == pytest.approx(2.0 + 10 * 1e-4 + 1.0)


def test_predict_time_is_monotone_in_every_input():
    p = NetworkProfile("x", rtt_s=0.01, bandwidth_bps=1e6)
    base = predict_time(1.0, 1000, 10, p)
    assert predict_time(1.1, 1000, 10, p) > base
    assert predict_time(1.0, 2000, 10, p) > base
    assert predict_time(1.0, 1000, 11, p) > base
    assert predict_time(1.0, 1000, 10, NetworkProfile("slow", 0.02, 1e6)) > base


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError):
        NetworkProfile("bad", rtt_s=-1, bandwidth_bps=1)
    with pytest.raises(ValueError):
        NetworkProfile("bad", rtt_s=0, bandwidth_bps=0)
    with pytest.raises(ValueError):
        predict_time(-1.0, 0, 0, LAN)


def _ledger(party: str, setup_sent: int, train_sent: int, train_rounds: int) -> dict:
    led = Ledger(party=party)
    if setup_sent:
        led.record_send(setup_sent)
    with led.phase("training"):
        for _ in range(train_rounds):
            led.record_send(train_sent // train_rounds)
    with led.phase("scoring"):
        led.record_send(10**9)  # must not count towards fit
    d = led.to_dict()
    d["by_phase"]["setup"]["wall_s"] = 0.5
    d["by_phase"]["training"]["wall_s"] = 2.0 if party == "bank" else 1.5
    return d


def test_summary_takes_the_busier_party_and_only_fit_phases():
    ledgers = {"bank": _ledger("bank", 100, 1000, 10), "provider": _ledger("provider", 0, 4000, 20)}
    s = traffic_summary(ledgers)
    assert s["bytes_sent_max_party"] == 4000
    assert s["rounds"] == 20
    assert s["wall_s"] == pytest.approx(2.5)
    assert s["per_party"]["bank"]["bytes_sent"] == 1100
    assert traffic_summary(ledgers, phases=["training"])["per_party"]["bank"]["bytes_sent"] == 1000


def test_predict_from_a_run_record_or_plain_ledgers():
    ledgers = {"bank": _ledger("bank", 0, 1_250_000, 50), "provider": _ledger("provider", 0, 250_000, 50)}
    record = {"parties": {r: {"ledger": led} for r, led in ledgers.items()}}
    got = predict_from_ledgers(record, compute_s=1.0)
    assert set(got) == {"LAN", "WAN"}
    # WAN: 1 + 50 * 0.02 + 1.25e6 * 8 / 1e8 = 1 + 1 + 0.1
    assert got["WAN"] == pytest.approx(2.1)
    assert got["LAN"] == pytest.approx(1.0 + 50 * 1e-4 + 0.01)
    assert predict_from_ledgers(ledgers, compute_s=1.0) == got
    # default compute time: the slower party's recorded wall time of the fit phases
    assert predict_from_ledgers(ledgers, [LAN])["LAN"] == pytest.approx(2.5 + 50 * 1e-4 + 0.01)


def test_missing_phases_count_as_zero_and_no_parties_is_an_error():
    led = Ledger(party="bank").to_dict()
    assert traffic_summary({"bank": led}, phases=["training"])["bytes_sent_max_party"] == 0
    with pytest.raises(ValueError):
        traffic_summary({})
