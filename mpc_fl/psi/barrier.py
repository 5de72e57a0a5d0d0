"""The end of alignment: a barrier both parties pass, agreeing on what they found, before training."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mpc_fl.runtime.channel import Channel

__all__ = ["end_of_alignment"]


def end_of_alignment(channel: Channel, peer: str, common: Sequence[bytes]) -> None:
    """A barrier both parties pass before anything else: they agree that alignment ended, and on what.

    Each sends the size and a hash of the common ids it found; both know the intersection, so the
    hash tells the peer nothing new, and a difference (or a peer still in its PSI) stops the run
    here, naming the link, instead of surfacing as a confused message in the next phase.
    """
    digest = hashlib.sha256(b"\n".join(sorted(common))).hexdigest()
    mine = {"alignment": "done", "n_common": len(common), "digest": digest}
    theirs = channel.exchange_json(peer, mine)
    if theirs != mine:
        raise ValueError(
            f"{channel.role}: alignment with {peer!r} ended differently on the two sides "
            f"({len(common):,} common ids here, {theirs.get('n_common') if isinstance(theirs, dict) else theirs!r} "
            f"there): stopping before training"
        )
