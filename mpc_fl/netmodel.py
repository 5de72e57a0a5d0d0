"""A first-order network cost model: run time under LAN and WAN from recorded bytes and rounds.

The runs themselves happen on one machine (loopback), so their wall time is mostly
computation. To say what a protocol would cost between two institutions we add,
per party, the time the network would take for the traffic its ledger recorded::

    predicted = compute_s + rounds * rtt / 2 + bytes_sent / bandwidth

Assumptions (state them with any number produced here):

* **Latency: one one-way delay (rtt/2) per round.** ``rounds`` is the ledger's count of
  communication calls (a send, a collective) of one party, taken as *sequential*: every
  call waits for data that crosses the link once. A request/response would cost a full
  RTT, but the protocols here exchange shares symmetrically (both parties send, then
  both receive), so one exchange costs one one-way delay. Since the ledger counts calls,
  not the protocol's round depth, ``rounds`` is an upper bound on the sequential calls
  (calls that overlap are over-counted), so the latency term is pessimistic.
* **Bandwidth: full duplex, the busier party dominates.** Each party has its own
  uplink of ``bandwidth_bps``; the parties send at the same time, so the transfer time
  is the larger of the parties' ``bytes_sent`` over the bandwidth (not their sum).
  Payload bytes only: TCP/IP headers (~3-5 %) and TCP slow start are ignored, which
  makes the term optimistic for small messages over a long RTT.
* **No overlap of computation and communication** (they add), no loss, no congestion.
* Dealer (Beaver-triple) traffic is counted only where it appears in a party's own
  ``bytes_sent``: the dealer is treated as an offline/preprocessing link.

Presets. ``LAN``: 1 Gbit/s and 0.2 ms RTT, a switched data-centre or campus Ethernet
(both parties in one facility). ``WAN``: 100 Mbit/s and 40 ms RTT, two institutions
in the same country or continent over the internet; WAN settings in the MPC
literature are typically in this range (tens of ms RTT, 50-200 Mbit/s). Both are
assumptions of the paper, not measurements: pass another NetworkProfile to vary them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NetworkProfile:
    """A link between two parties: round-trip time (seconds) and bandwidth (bits per second)."""

    name: str
    rtt_s: float
    bandwidth_bps: float

    def __post_init__(self) -> None:
        if self.rtt_s < 0:
            raise ValueError(f"rtt_s must be >= 0, got {self.rtt_s}")
        if self.bandwidth_bps <= 0:
            raise ValueError(f"bandwidth_bps must be > 0, got {self.bandwidth_bps}")


LAN = NetworkProfile("LAN", rtt_s=0.2e-3, bandwidth_bps=1e9)
WAN = NetworkProfile("WAN", rtt_s=40e-3, bandwidth_bps=100e6)
PROFILES: tuple[NetworkProfile, ...] = (LAN, WAN)

#: the phases inside ``fit`` (the protocols' ``setup`` and ``training``)
FIT_PHASES: tuple[str, ...] = ("setup", "training")


def latency_s(rounds: int, profile: NetworkProfile) -> float:
    """The latency term: one one-way delay per sequential communication call."""
    return rounds * profile.rtt_s / 2


def transfer_s(bytes_sent_max_party: int | float, profile: NetworkProfile) -> float:
    """The bandwidth term: the busier party's payload over its uplink."""
    return bytes_sent_max_party * 8 / profile.bandwidth_bps


def predict_time(
    compute_s: float, bytes_sent_max_party: int | float, rounds: int, profile: NetworkProfile
) -> float:
    """Predicted wall time: ``compute_s + rounds * rtt / 2 + 8 * bytes / bandwidth`` (see the module doc)."""
    if compute_s < 0 or bytes_sent_max_party < 0 or rounds < 0:
        raise ValueError("compute_s, bytes_sent_max_party and rounds must be >= 0")
    return compute_s + latency_s(rounds, profile) + transfer_s(bytes_sent_max_party, profile)


def _party_ledgers(record_or_ledgers: Mapping[str, Any]) -> dict[str, dict]:
    """Accept a run record (``record["parties"][role]["ledger"]``) or ``{role: ledger_dict}``."""
    if "parties" in record_or_ledgers:
        return {role: p["ledger"] for role, p in record_or_ledgers["parties"].items()}
    return dict(record_or_ledgers)


def traffic_summary(
    record_or_ledgers: Mapping[str, Any], phases: Iterable[str] = FIT_PHASES
) -> dict[str, Any]:
    """Per-party traffic summed over ``phases``, and the model's inputs.

    Returns ``bytes_sent_max_party`` (the larger party's bytes_sent), ``rounds`` (the
    larger party's rounds: the parties step together, so the busier one sets the pace),
    ``wall_s`` (the larger party's wall time in those phases) and the per-party numbers.
    Phases a party never entered count as zero.
    """
    phases = tuple(phases)
    per_party = {}
    for role, led in _party_ledgers(record_or_ledgers).items():
        by_phase = led["by_phase"]
        per_party[role] = {
            key: sum(by_phase.get(ph, {}).get(key, 0) for ph in phases)
            for key in ("bytes_sent", "bytes_recv", "rounds", "wall_s", "dealer_bytes")
        }
    if not per_party:
        raise ValueError("no party ledgers found")
    return {
        "phases": list(phases),
        "bytes_sent_max_party": max(p["bytes_sent"] for p in per_party.values()),
        "rounds": max(p["rounds"] for p in per_party.values()),
        "wall_s": max(p["wall_s"] for p in per_party.values()),
        "per_party": per_party,
    }


def predict_from_ledgers(
    record_or_ledgers: Mapping[str, Any],
    profiles: Iterable[NetworkProfile] = PROFILES,
    *,
    compute_s: float | None = None,
    phases: Iterable[str] = FIT_PHASES,
) -> dict[str, float]:
    """Predicted time of ``phases`` per profile name, from a run record or ``{role: ledger_dict}``.

    ``compute_s`` defaults to the larger party's recorded wall time in those phases: on
    loopback, communication costs little, so that time is mostly computation (it still
    contains the loopback transfer time, which makes the prediction slightly high).
    """
    summary = traffic_summary(record_or_ledgers, phases)
    base = summary["wall_s"] if compute_s is None else compute_s
    return {
        p.name: predict_time(base, summary["bytes_sent_max_party"], summary["rounds"], p) for p in profiles
    }
