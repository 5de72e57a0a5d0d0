"""Start party processes (and the dealer) as commands, watch them, stop all if one fails.

Used by ``mpc-fl run``, ``mpc-fl score`` and the demo for local runs. Each party is an
independent OS process running ``mpc-fl party --job FILE`` with its own key file; the launcher
only makes a local federation (fresh keys, free ports on 127.0.0.1), starts and watches the
processes, so the same jobs can be started by hand on different hosts instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mpc_fl.app.jobs import Job, write_job
from mpc_fl.runtime.federation import federation_text, local_federation
from mpc_fl.runtime.local import PartyFailed, describe_failures
from mpc_fl.runtime.progress import PREFIX
from mpc_fl.runtime.roles import DEALER


def _error_line(path: Path) -> str:
    """A failed process's own one-line account (``mpc-fl <who>: error: ...``), else its last line."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("mpc-fl "):
            for marker in (": error: ", ": internal error: "):
                if marker in line:
                    return line.split(marker, 1)[1] if "internal" not in marker else line.split(": ", 1)[1]
    return lines[-1] if lines else ""


def _failure(path: Path, code: int) -> str:
    """Why a process ended with ``code``: killed by a signal (a crash in native code, say) or its own account."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        last = _error_line(path)
        return f"killed by {name}" + (f" (its last line: {last})" if last else "")
    return _error_line(path) or f"exited with code {code}"


class _ProgressRelay:
    """Echo one process's progress lines (see :mod:`mpc_fl.runtime.progress`) to this terminal."""

    def __init__(self, path: Path | None):
        self.path, self.pos = path, 0

    def poll(self) -> None:
        if self.path is None or not self.path.exists():
            return
        with open(self.path, errors="replace") as fh:
            fh.seek(self.pos)
            chunk = fh.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.pos += len(complete.encode())
        for line in complete.splitlines():
            if line.startswith(PREFIX):
                print(line[len(PREFIX) :], file=sys.stderr, flush=True)


def launch(
    commands: dict[str, list[str]],
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 3600.0,
    grace_s: float = 3.0,
    relay: str | None = None,
) -> None:
    """Run every command to completion; on the first failure stop the rest and raise :class:`PartyFailed`.

    ``relay``: a command whose progress lines are echoed to this process's stderr.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    progress = _ProgressRelay(log_dir / f"{relay}.log" if relay else None)
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
                        failed[name] = _failure(logs[name], code)
            progress.poll()
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
                    failed[name] = _failure(logs[name], code)
            raise PartyFailed(f"{describe_failures(failed)} (logs in {log_dir})")
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


def _clear_earlier_run(out_dir: Path, roles: list[str]) -> None:
    """A run folder holds one run: the reports and logs an earlier run left there go first, so a
    failed run cannot be mistaken for the earlier one's results (the keys are replaced too)."""
    for name in [*(f"{r}.json" for r in roles), "run.json", "federation.toml"]:
        (out_dir / name).unlink(missing_ok=True)
    for job in (out_dir / "jobs").glob("*.job.json"):
        job.unlink()
    logs = out_dir / "logs"
    if logs.is_dir():
        for log in logs.glob("*.log"):
            log.unlink()


def run_jobs(
    jobs: dict[str, Job], out_dir: Path, *, relay_progress: bool = False, timeout_s: float = 3600.0
) -> tuple[dict[str, dict], float]:
    """Start every member's job as its own ``mpc-fl <command> --job FILE`` process; return each
    party's report (its job's ``out`` JSON) and the wall time.

    Each job is written to ``out_dir/jobs/<role>.job.json``: the child reads and validates it, so
    nothing is written back out as command-line flags.
    """
    py = [sys.executable, "-m", "mpc_fl.app.cli"]
    commands = {
        role: [*py, _COMMAND[job.kind], "--job", str(write_job(job, out_dir / "jobs" / f"{role}.job.json"))]
        for role, job in jobs.items()
    }
    t0 = time.perf_counter()
    launch(
        commands, out_dir / "logs", env={"PYTHONWARNINGS": "ignore"}, timeout_s=timeout_s,
        relay="bank" if relay_progress else None,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    reports = {r: json.loads(Path(j.out).read_text()) for r, j in jobs.items() if getattr(j, "out", None)}
    return reports, wall


#: the command that runs each kind of job
_COMMAND = {
    "train": "party",
    "score": "score-party",
    "shortlist": "shortlist-party",
    "attribute": "attribute-party",
    "dealer": "dealer",
}


def local_members(out_dir: Path, roles: list[str], dealer: bool) -> tuple[Path, dict[str, Path]]:
    """A fresh local federation for one run in ``out_dir`` (its file and each member's key file),
    after clearing what an earlier run left there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_earlier_run(out_dir, [*roles, DEALER])
    fed, keys = local_federation(tuple(roles), out_dir / "keys", dealer=dealer)
    fed_file = out_dir / "federation.toml"
    fed_file.write_text(federation_text(list(fed.members)))
    return fed_file, keys
