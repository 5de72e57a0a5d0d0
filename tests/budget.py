"""How long a test may wait for the processes it starts: budgets that scale with what they run."""

from __future__ import annotations

#: A test that waits for processes gets what its work takes on a quiet 2-core machine times this,
#: plus the start-up of its processes: enough beside one busy core (the machines are shared), and
#: still far below pytest's 600 s cap, so a hang fails with the launcher's line naming who is stuck.
LOAD_SLACK = 4.0
#: Start-up of one party process (imports of torch and CrypTen) on a busy machine.
PROCESS_START_S = 15.0


def budget_s(quiet_s: float, processes: int = 3) -> float:
    """The wait budget of a test whose processes take ``quiet_s`` seconds on a quiet machine."""
    return LOAD_SLACK * quiet_s + PROCESS_START_S * processes
