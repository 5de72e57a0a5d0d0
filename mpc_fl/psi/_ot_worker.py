"""The native PSI library's own process: ``python -m mpc_fl.psi._ot_worker CONFIG.json``.

Why a process of its own: the library is C++ (brpc, static destructors, its own loggers and
threads). Run inside the party, a crash in it (a segfault was seen under load) took the whole
party down with no word on what failed, and its console output and exit-time logging had to be
caught with file-descriptor tricks. Here it runs alone: the party keeps its links, tunnel and
state, sees the exit status, and reports a crash as a crash of the PSI library, naming itself.

Its link: its server and the peer's address are Unix sockets in the party's private working
directory (brpc accepts ``unix:/path``), never TCP ports (see :mod:`mpc_fl.psi.ot`).

This process loads the library and no torch, CrypTen or protocol code. Its exit status:
0 the PSI ran, 3 the library raised (the message is on stderr, which the party logs), or
minus the signal number that killed it.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys

EXIT_LIBRARY_ERROR = 3


def run(config: dict) -> None:
    from mpc_fl.psi._libpsi import load

    libspu, libpsi = load()
    os.umask(0o077)  # the server's socket file: this user only (its directory is private too)
    desc = libspu.link.Desc()
    desc.id = "mpc_fl-psi"
    for rank, role in enumerate(config["ranks"]):  # our server; the peer is the party's tunnel
        path = config["server"] if rank == config["me"] else config["tunnel"]
        desc.add_party(role, f"unix:{path}")
    desc.brpc_channel_connection_type = "single"
    desc.recv_timeout_ms = config["recv_timeout_ms"]
    lctx = libspu.link.create_brpc(desc, config["me"])
    try:
        psi_config = libpsi.PsiExecuteConfig(
            protocol_conf=libpsi.PsiProtocolConfig(
                protocol=getattr(libpsi.PsiProtocol, f"PROTOCOL_{config['protocol'].upper()}"),
                receiver_rank=config["receiver_rank"],
                broadcast_result=True,
            ),
            input_params=libpsi.InputParams(path=config["input"], selected_keys=["k"], keys_unique=True),
            output_params=libpsi.OutputParams(path=config["output"], disable_alignment=False),
        )
        libpsi.psi_execute(psi_config, lctx)
        lctx.barrier()  # neither side stops its link while the other still needs it
    finally:
        lctx.stop_link()


def main(argv: list[str]) -> int:
    faulthandler.enable()  # a native crash leaves its stack in the log the party reads
    with open(argv[0]) as fh:
        config = json.load(fh)
    try:
        run(config)
    except Exception as err:  # noqa: BLE001 - reported to the party through the exit status and log
        print(f"mpc_fl-psi-worker: error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return EXIT_LIBRARY_ERROR
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
