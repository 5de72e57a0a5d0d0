"""Bytes this process really put on the network: the kernel's per-socket TCP counters.

Used to check the ledger against the wire. Reads ``ss -tinp`` (iproute2), which
reports ``bytes_sent`` for every TCP socket with its owning process; TCP/IP headers
are not included, so this is the payload the transport carried.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

_SOCKET = re.compile(r"pid=(\d+),")
_SENT = re.compile(r"bytes_sent:(\d+)")


def tcp_bytes_sent(pid: int | None = None) -> int | None:
    """Sum of ``bytes_sent`` over the open TCP sockets of ``pid`` (this process by default); None if unknown."""
    if shutil.which("ss") is None:
        return None
    pid = os.getpid() if pid is None else pid
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    total, mine = 0, False
    for line in out:
        if not line.startswith((" ", "\t")):
            mine = any(int(p) == pid for p in _SOCKET.findall(line))
        elif mine:
            m = _SENT.search(line)
            total += int(m.group(1)) if m else 0
    return total
