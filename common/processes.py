"""Stopping a process group: the one place that signals a child's group and escalates SIGTERM to SIGKILL.

Children the console starts (workers, training processes, serving instances, test servers) lead a process group
or session of their own, so what they start goes with them. ``signal_group`` signals such a group and says
nothing if it has gone; ``stop_group`` is the whole polite stop for a caller that can wait: SIGTERM, a grace
period, then SIGKILL. The supervisor and the node agent stop many processes at once without blocking, so they
send ``signal_group`` themselves and escalate after their own grace.
"""

from __future__ import annotations

import os
import signal
import subprocess


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group ``pid`` leads (to the process alone where the group cannot be
    signalled); nothing if it has already gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_group(proc: subprocess.Popen, grace: float = 10, kill_wait: float = 10) -> int | None:
    """SIGTERM ``proc``'s group, wait up to ``grace`` seconds, then SIGKILL it and wait up to ``kill_wait``.
    The exit status, or None if it outlived even SIGKILL's wait."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        if proc.poll() is not None:
            break
        signal_group(proc.pid, sig)
        try:
            return proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()
