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

from mpc_fl.runtime.local import PartyFailed, describe_failures


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
        failed: dict[str, str] = {}
        while running and not failed:
            for name in sorted(running):
                code = procs[name].poll()
                if code is not None:
                    running.discard(name)
                    if code != 0:
                        failed[name] = f"exited with code {code}: {_tail(logs[name], 1)}"
            if time.monotonic() > deadline:
                raise PartyFailed(
                    f"parties {sorted(running)} still running after {timeout_s:.0f} s; stopped them"
                )
            time.sleep(0.1)
        if failed:
            time.sleep(1.0)  # let the others notice, then blame the one that failed first
            for name in running:
                code = procs[name].poll()
                if code not in (0, None):
                    failed[name] = f"exited with code {code}: {_tail(logs[name], 1)}"
            first = describe_failures(failed).split("'")[1]
            raise PartyFailed(f"{describe_failures(failed)}\n--- log of {first!r} ---\n{_tail(logs[first])}")
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
