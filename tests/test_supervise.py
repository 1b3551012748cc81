"""`./run up`'s supervisor (ops/supervise.py) on small shell processes: restart, back-off, ordered stop, cleanup."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class Supervised:
    """`python -m ops.supervise` on a Procfile, its output in a file; every process it starts is marked."""

    def __init__(self, tmp_path: Path, procfile: str, *args: str, grace: float = 15) -> None:
        self.mark = f"RUNUP_SUPERVISE_TEST={tmp_path}"
        path = tmp_path / "Procfile"
        path.write_text(procfile)
        self.log = tmp_path / "supervise.log"
        env = {**os.environ, "RUNUP_SUPERVISE_TEST": str(tmp_path), "CONSOLE_STOP_GRACE": str(grace)}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ops.supervise", str(path), *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float = 10) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := re.search(pattern, self.output(), re.MULTILINE):
                return found
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the output:\n{self.output()}")

    def alive(self) -> list[int]:
        """Live processes carrying this test's mark in their environment (not the supervisor itself)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == self.proc.pid:
                continue
            try:
                if self.mark.encode() in (proc / "environ").read_bytes().split(b"\0"):
                    if (proc / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                        found.append(int(proc.name))
            except OSError:
                continue
        return found

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.alive():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def supervised(tmp_path):
    started = []

    def start(procfile: str, *args: str, grace: float = 15) -> Supervised:
        started.append(Supervised(tmp_path, procfile, *args, grace=grace))
        return started[-1]

    yield start
    for one in started:
        one.close()


def _pid(sup: Supervised, name: str, start: int = 1) -> int:
    """The pid of `name` once it has been started `start` times."""
    deadline = time.monotonic() + 10
    while len(pids := re.findall(rf"\| {name} started \(pid (\d+)\)$", sup.output(), re.MULTILINE)) < start:
        assert time.monotonic() < deadline, sup.output()
        time.sleep(0.05)
    return int(pids[-1])


def _eventually(check, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_process_that_dies_is_restarted_alone_and_what_it_left_goes_with_it(supervised):
    sup = supervised("one: sleep 600 & exec sleep 601\ntwo: exec sleep 602\n")
    one, two = _pid(sup, "one"), _pid(sup, "two")
    _eventually(lambda: len(sup.alive()) == 3)  # one's shell-started sleep 600 beside it
    os.kill(one, signal.SIGKILL)
    sup.wait_for(rf"\| one \(pid {one}\) was killed by SIGKILL after \d+ s; restarting it in 1 s$")
    assert _pid(sup, "one", start=2) != one
    assert sup.proc.poll() is None and os.path.exists(f"/proc/{two}")
    # The killed process's group went with it (3 again, not 4: the new start made its own sleep 600).
    _eventually(lambda: len(sup.alive()) == 3)
    time.sleep(0.3)
    assert len(sup.alive()) == 3, sup.output()
    assert "two (pid" not in sup.output()

    os.kill(sup.proc.pid, signal.SIGINT)
    assert sup.proc.wait(10) == 0
    assert not sup.alive()
    assert "everything stopped" in sup.output()


def test_a_process_that_keeps_dying_backs_off(supervised):
    sup = supervised("flaky: echo trying; exit 3\nsteady: exec sleep 600\n")
    sup.wait_for(r"flaky \(pid \d+\) exited with code 3 after 0 s; restarting it in 1 s$")
    sup.wait_for(r"flaky \(pid \d+\) exited with code 3 after 0 s; restarting it in 2 s$", timeout=5)
    sup.wait_for(r"flaky \(pid \d+\) exited with code 3 after 0 s; restarting it in 4 s$", timeout=5)
    assert re.search(r"^\d\d:\d\d:\d\d flaky +\| trying$", sup.output(), re.MULTILINE)
    assert sup.output().count("steady started") == 1
    os.kill(sup.proc.pid, signal.SIGTERM)
    assert sup.proc.wait(10) == 0
    assert not sup.alive()


def test_stop_goes_in_order_and_kills_what_outlives_the_grace(supervised):
    procfile = (
        "last: trap 'echo last got TERM; exit 0' TERM; while :; do sleep 0.1; done\n"
        "polite: exec sleep 600\n"
        "stubborn: trap '' TERM; exec sleep 601\n"
    )
    sup = supervised(procfile, "--last", "last", grace=2)
    for name in ("last", "polite", "stubborn"):
        _pid(sup, name)
    time.sleep(0.3)  # the traps are set
    started = time.monotonic()
    os.kill(sup.proc.pid, signal.SIGINT)
    assert sup.proc.wait(15) == 0
    took = time.monotonic() - started
    out = sup.output()
    order = [
        out.index(line)
        for line in (
            "stopping polite, stubborn (SIGKILL after 2 s)",
            "polite stopped (killed by SIGTERM)",
            "stubborn still running: SIGKILL",
            "stubborn stopped (killed by SIGKILL)",
            "stopping last (SIGKILL after 2 s)",
            "last got TERM",
            "last stopped (exited with code 0)",
            "everything stopped",
        )
    ]
    assert order == sorted(order), out
    assert 2 <= took < 6, took
    assert not sup.alive()


def test_nothing_outlives_the_supervisor_killed_outright(supervised):
    sup = supervised("a: exec sleep 600\nb: exec sleep 601\n")
    _pid(sup, "a")
    _pid(sup, "b")
    _eventually(lambda: len(sup.alive()) == 2)
    os.kill(sup.proc.pid, signal.SIGKILL)
    sup.proc.wait(5)
    _eventually(lambda: not sup.alive())  # the kernel sends them SIGTERM (PR_SET_PDEATHSIG)


def test_a_bad_procfile_is_refused(tmp_path):
    (tmp_path / "Procfile").write_text("web exec sleep 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "ops.supervise", str(tmp_path / "Procfile")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "expected 'name: command'" in result.stderr
