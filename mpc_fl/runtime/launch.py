"""Start party processes (and the dealer) as commands, watch them, stop all if one fails.

Used by ``mpc-fl run`` for local experiments. Each party is an independent OS process
running ``mpc-fl party``; the launcher only starts and watches them, so the same
commands can be started by hand on different hosts instead.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from mpc_fl.runtime.local import PartyFailed


def _tail(path: Path, n: int = 12) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def launch(
    commands: dict[str, list[str]],
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 3600.0,
    grace_s: float = 3.0,
) -> None:
    """Run every command to completion; on the first failure stop the rest and raise :class:`PartyFailed`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    try:
        for name, cmd in commands.items():
            logs[name] = log_dir / f"{name}.log"
            with open(logs[name], "w") as fh:
                procs[name] = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.monotonic() + timeout_s
        running = set(procs)
        while running:
            for name in sorted(running):
                code = procs[name].poll()
                if code is None:
                    continue
                running.discard(name)
                if code != 0:
                    raise PartyFailed(f"party {name!r} exited with code {code}:\n{_tail(logs[name])}")
            if time.monotonic() > deadline:
                raise PartyFailed(f"parties {sorted(running)} still running after {timeout_s:.0f} s; stopped them")
            time.sleep(0.1)
    finally:
        for p in procs.values():
            if p.poll() is None:
                try:
                    p.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    p.terminate()
                    try:
                        p.wait(timeout=grace_s)
                    except subprocess.TimeoutExpired:
                        p.kill()
