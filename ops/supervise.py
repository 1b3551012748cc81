"""`./run up`'s process manager: runs a Procfile's processes, restarts one that dies, stops them all in order.

    python -m ops.supervise PROCFILE [--last NAME ...]

Each Procfile line is ``name: shell command``. Every process runs in its own process group, and its output comes
out here, each line prefixed with the time and the process's name (coloured on a terminal).

- A process that exits while the console runs is started again, and the others are left alone. The output says
  which one, how it ended (exit code or signal) and when it restarts: after 1 s, doubling up to 30 s while it
  keeps dying within 10 s of its start.
- SIGINT (Ctrl-C), SIGTERM or SIGHUP stops everything in order: first every process but the ``--last`` ones
  (SIGTERM to its process group, SIGKILL after CONSOLE_STOP_GRACE seconds, default 15: a training worker uses
  them to hand its task back), then the ``--last`` ones (the embedded Redis, which the others need until they
  are gone) the same way. A second Ctrl-C kills what is left at once.
- If this process is killed outright, the kernel sends SIGTERM to every process it started (PR_SET_PDEATHSIG), so
  nothing outlives the run command.

honcho stopped everything when one process exited. supervisord restarts, but is a daemon with its own config file,
control socket and log files, interleaves no prefixed output, and leaves its children running when it is
SIGKILLed; what is needed here fits in this module.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from common.processes import signal_group

PR_SET_PDEATHSIG = 1
RESTART_FIRST = 1.0  # seconds before the first restart
RESTART_MAX = 30.0  # the back-off stops growing here
STABLE_AFTER = 10.0  # a process that ran this long starts over at RESTART_FIRST
COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
SELF = "up"  # the name on this supervisor's own lines

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux: no parent-death signal, the supervisor's own stop is all there is
    _libc = None


def stop_grace() -> float:
    # The supervisor runs before and without Django settings, so it reads its one variable itself; its default is
    # the one docs/configuration.md gives.
    return float(os.environ.get("CONSOLE_STOP_GRACE", "15"))


def die_with_parent(parent: int) -> None:
    """In a child before exec: the kernel sends it SIGTERM when `parent` dies, even by SIGKILL."""
    if _libc is None:
        return
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def read_procfile(path: Path) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = (part.strip() for part in line.partition(":"))
        if not sep or not command or not re.fullmatch(r"[\w.-]+", name):
            raise ValueError(f"{path}:{number}: expected 'name: command', not {raw!r}")
        if any(name == seen for seen, _ in entries):
            raise ValueError(f"{path}:{number}: the name {name!r} is used twice")
        entries.append((name, command))
    return entries


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Process:
    name: str
    command: str
    colour: str
    popen: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        entries: list[tuple[str, str]],
        *,
        last: AbstractSet[str] = frozenset(),
        grace: float | None = None,
        out: BinaryIO | None = None,
        colour: bool | None = None,
    ) -> None:
        self.procs = [Process(name, command, COLOURS[i % len(COLOURS)]) for i, (name, command) in enumerate(entries)]
        self.last = set(last)
        self.grace = stop_grace() if grace is None else grace
        self.out = out or sys.stdout.buffer
        self.colour = (self.out.isatty() and "NO_COLOR" not in os.environ) if colour is None else colour
        self.width = max(len(name) for name in [SELF, *(p.name for p in self.procs)])
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.selector = selectors.DefaultSelector()
        self.partial: dict[int, bytes] = {}
        self.signals = 0

    # --- output ---------------------------------------------------------------
    def write(self, name: str, colour: str, text: bytes) -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name:<{self.width}} | "
        if self.colour:
            prefix = f"\033[{colour}m{prefix}\033[0m"
        self.out.write(prefix.encode() + text + b"\n")
        self.out.flush()

    def say(self, message: str) -> None:
        self.write(SELF, "1", message.encode())

    def pump(self, timeout: float) -> None:
        """Copy whatever the processes wrote, a line at a time, waiting at most `timeout` seconds for it."""
        for key, _ in self.selector.select(timeout):
            fd, proc = key.fd, key.data
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            buffered = self.partial.pop(fd, b"") + chunk
            if not chunk:  # every writer closed the pipe
                self.selector.unregister(fd)
                os.close(fd)
                if buffered:
                    self.write(proc.name, proc.colour, buffered)
                continue
            *lines, rest = buffered.split(b"\n")
            for line in lines:
                self.write(proc.name, proc.colour, line.rstrip(b"\r"))
            if len(rest) > 65536:
                self.write(proc.name, proc.colour, rest)
            elif rest:
                self.partial[fd] = rest

    # --- processes -------------------------------------------------------------
    def start(self, proc: Process) -> None:
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        try:
            proc.popen = subprocess.Popen(  # noqa: PLW1509 - single-threaded here, so preexec_fn is safe
                ["/bin/sh", "-c", proc.command],
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                env=self.env,
                start_new_session=True,
                preexec_fn=lambda: die_with_parent(parent),
            )
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.selector.register(read_fd, selectors.EVENT_READ, proc)
        proc.started_at, proc.restart_at = time.monotonic(), None
        self.say(f"{proc.name} started (pid {proc.popen.pid})")

    def reap(self) -> None:
        """Notice processes that ended; while running, schedule their restart."""
        now = time.monotonic()
        for proc in self.procs:
            popen = proc.popen
            if popen is None or popen.poll() is None:
                continue
            proc.popen = None
            # What it left in its group (a Celery worker's pool processes) goes with it.
            signal_group(popen.pid, signal.SIGKILL)
            if self.signals:
                self.say(f"{proc.name} stopped ({describe_exit(popen.returncode).removeprefix('was ')})")
                continue
            uptime = now - proc.started_at
            proc.quick_exits = proc.quick_exits + 1 if uptime < STABLE_AFTER else 1
            delay = min(RESTART_MAX, RESTART_FIRST * 2 ** (proc.quick_exits - 1))
            proc.restart_at = now + delay
            self.say(
                f"{proc.name} (pid {popen.pid}) {describe_exit(popen.returncode)} after {uptime:.0f} s; "
                f"restarting it in {delay:g} s"
            )

    def stop(self) -> None:
        """Stop every process but the last ones, then the last ones: SIGTERM, SIGKILL after the grace period."""
        for group in (
            [p for p in self.procs if p.name not in self.last],
            [p for p in self.procs if p.name in self.last],
        ):
            running = [(p.name, p.popen.pid) for p in group if p.popen is not None]
            if not running:
                continue
            self.say(f"stopping {', '.join(name for name, _ in running)} (SIGKILL after {self.grace:g} s)")
            for _, pid in running:
                signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace
            while any(p.popen for p in group) and time.monotonic() < deadline and self.signals < 2:
                self.pump(0.1)
                self.reap()
            for proc in group:
                if proc.popen is not None:
                    self.say(f"{proc.name} still running: SIGKILL")
                    signal_group(proc.popen.pid, signal.SIGKILL)
            while any(p.popen for p in group):
                self.pump(0.05)
                self.reap()
        deadline = time.monotonic() + 2
        while self.selector.get_map() and time.monotonic() < deadline:
            self.pump(0.05)

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        for proc in self.procs:
            self.start(proc)
        while not self.signals:
            self.pump(0.1)
            self.reap()
            now = time.monotonic()
            for proc in self.procs:
                if proc.popen is None and proc.restart_at is not None and now >= proc.restart_at and not self.signals:
                    self.start(proc)
        self.stop()
        self.say("everything stopped")
        return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.supervise", description=__doc__.splitlines()[0])
    parser.add_argument("procfile", type=Path)
    parser.add_argument(
        "--last",
        action="append",
        default=[],
        metavar="NAME",
        help="stop this process after all the others (repeatable)",
    )
    args = parser.parse_args(argv)
    entries = read_procfile(args.procfile)
    if not entries:
        parser.error(f"{args.procfile} names no process")
    return Supervisor(entries, last=set(args.last)).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
