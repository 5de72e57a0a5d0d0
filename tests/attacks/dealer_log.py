"""Everything the dealer receives in a run, kept in a file (the forked dealer inherits the patch)."""

from __future__ import annotations

from pathlib import Path

from mpc_fl.runtime.mesh import Mesh

_RECV = Mesh.recv  # the real one, whatever an earlier call patched in


def record(monkeypatch, log: Path) -> None:  # noqa: ANN001
    """Append every payload the dealer receives to ``log``, length-prefixed."""

    def recording_recv(self, peer, channel, timeout_s=None):  # noqa: ANN001, ANN202
        data = _RECV(self, peer, channel, timeout_s)
        if self.me == "dealer":
            with log.open("ab") as fh:
                fh.write(len(data).to_bytes(8, "little") + bytes(data))
        return data

    monkeypatch.setattr(Mesh, "recv", recording_recv)


def payloads(log: Path) -> list[bytes]:
    """The payloads :func:`record` kept, in order."""
    raw, out = log.read_bytes(), []
    while raw:
        size = int.from_bytes(raw[:8], "little")
        out.append(raw[8 : 8 + size])
        raw = raw[8 + size :]
    return out
