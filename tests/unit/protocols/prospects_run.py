"""One case's prospect model in a fresh process (``python -m tests.unit.protocols.prospects_run NAME``).

Why a fresh process: the parties are forked, and a child forked from a process whose HEU thread
pool already ran can wait forever on its locks (the HE cases need CrypTen here, so threads will
not do). Prints one JSON line: the bank's margins from ``decision_function`` and from the opened
``prospect_margins``, and what the provider got back.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from mpc_fl.crypto.paillier import allow_short_keys_for_tests
from mpc_fl.protocols import case, make_protocol
from mpc_fl.protocols.base import BANK, LocalData
from mpc_fl.runtime.local import run_local

N_TRAIN, N_TEST = 240, 60


def data(role: str) -> tuple[LocalData, LocalData]:
    """A prospect model's inputs: the bank's labels and no features, the provider's three features."""
    gen = np.random.default_rng(3)
    n = N_TRAIN + N_TEST
    xp = gen.normal(size=(n, 3))
    y = (xp[:, 0] - 0.7 * xp[:, 2] + gen.normal(size=n) > 0).astype(np.int64)
    X = np.zeros((n, 0)) if role == BANK else xp
    names = () if role == BANK else ("a", "b", "c")
    return LocalData(X[:N_TRAIN], y[:N_TRAIN] if role == BANK else None, names), LocalData(
        X[N_TRAIN:], None, names
    )


def main(name: str) -> None:
    c = case(name)
    options = c.settings("smoke")
    if "key_bits" in options:
        options = {**options, "key_bits": 1024}

    def party(session) -> dict:  # noqa: ANN001 - a PartySession
        train, test = data(session.role)
        proto = make_protocol(c.protocol, **options)
        proto.fit(session, train)
        z = proto.decision_function(session, test)
        opened = proto.prospect_margins(session, test).get_plain_text(dst=0)
        return {
            "decision": None if z is None else np.asarray(z).tolist(),
            "prospect": None if opened is None else opened.double().numpy().tolist(),
        }

    with allow_short_keys_for_tests():
        out = run_local(party, uses_crypten=True, dealer=True, timeout_s=600)
    print(json.dumps({r: v["result"] for r, v in out.items() if r != "dealer"}))


if __name__ == "__main__":
    main(sys.argv[1])
