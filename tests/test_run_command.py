"""The README's start command: everything comes up, /healthz is 200, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, port: int) -> dict:
    keep = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "DJANGO_SETTINGS_MODULE",
            "CONSOLE_ENV",
            "CONSOLE_VAR_DIR",
            "CONSOLE_MODELS_DIR",
            "DJANGO_ALLOW_ASYNC_UNSAFE",
        }
    }
    return {
        **keep,
        "CONSOLE_VAR_DIR": str(tmp_path / "var"),
        "PORT": str(port),
        "CONSOLE_ADMIN_PASSWORD": "pw-123",
        "HEALTHZ_TOKEN": HEALTHZ_TOKEN,
    }


def _ours(tmp_path: Path) -> list[str]:
    """Every live process started with this test's CONSOLE_VAR_DIR in its environment or its var/ in its
    command line (redis-server rewrites its own title over its environment)."""
    marker = f"CONSOLE_VAR_DIR={tmp_path / 'var'}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in (proc / "environ").read_bytes().split(b"\0") or str(tmp_path / "var") in cmdline:
                found.append(cmdline)
        except OSError:
            continue
    return found


def test_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            ["./run", "up"], cwd=ROOT, env=_env(tmp_path, port), capture_output=True, text=True, timeout=300
        )
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr and "Nothing was started" in result.stderr
    assert not _ours(tmp_path)


def _children(pid: int) -> dict[str, int]:
    """The supervisor's processes, by role, from /proc: each one's pid."""
    roles = {
        "redis": "ops.embedded_redis",
        "web": "uvicorn",
        "worker": "worker -Q default,serving",
        "trainer": "worker -Q training",
        "beat": "console beat",
        "node": "serve_node",
    }
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().rpartition(")")[2].split()[1]) != pid:
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for role, marker in roles.items():
            if marker in cmdline:
                found[role] = int(proc.name)
    return found


HEALTHZ_TOKEN = "monitoring-token-of-the-run-test"


def _healthz(port: int) -> httpx.Response:
    """/healthz as a monitoring system reads it: with the token, which shows the workers and beat."""
    return httpx.get(
        f"http://127.0.0.1:{port}/healthz", timeout=10, headers={"Authorization": f"Bearer {HEALTHZ_TOKEN}"}
    )


@pytest.mark.timeout(400)
def test_up_serves_restarts_a_killed_worker_and_ctrl_c_stops_every_process(tmp_path):
    port = _free_port()
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["./run", "up"],
            cwd=ROOT,
            env=_env(tmp_path, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline, health = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = _healthz(port)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert health is not None and health.status_code == 200, health and health.text
        # 200 means every process ./run up starts is up: both workers and beat, not just one of them.
        workers = health.json()["checks"]["celery"]["workers"]
        assert any(w.startswith("worker@") for w in workers) and any(w.startswith("trainer@") for w in workers)
        assert health.json()["checks"]["beat"]["running"] is True
        login = httpx.get(f"http://127.0.0.1:{port}/console/login/")
        assert login.status_code == 200 and "Log in to the console" in login.text
        assert httpx.get(f"http://127.0.0.1:{port}/static/django_htmx/htmx-2.min.js").status_code == 200
        running = _ours(tmp_path)
        for name in (
            "uvicorn",
            "ops.embedded_redis",
            "redis-server",
            "worker -Q default,serving",
            "worker -Q training",
            "beat",
        ):
            assert any(name in cmd for cmd in running), (name, running)

        # SIGKILL the default worker: it is started again, alone; the web serves throughout and /healthz says
        # 503 until the new worker answers.
        before = _children(proc.pid)
        assert set(before) == {"redis", "web", "worker", "trainer", "beat", "node"}, before
        os.kill(before["worker"], signal.SIGKILL)
        statuses, deadline = [], time.monotonic() + 120
        while not statuses or statuses[-1] != 200:
            assert time.monotonic() < deadline, statuses
            assert httpx.get(f"http://127.0.0.1:{port}/console/login/", timeout=10).status_code == 200
            statuses.append(_healthz(port).status_code)
            time.sleep(0.2)
        assert statuses[0] == 503 and set(statuses) == {503, 200}, statuses
        after = _children(proc.pid)
        assert after["worker"] != before["worker"]
        assert {k: v for k, v in after.items() if k != "worker"} == {k: v for k, v in before.items() if k != "worker"}
        assert f"worker (pid {before['worker']}) was killed by SIGKILL" in log.read_text()
    finally:
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
        proc.wait(timeout=60)
    output = log.read_text()
    assert "First run: created the admin account." in output and "password: pw-123" in output
    assert f"http://127.0.0.1:{port}/console/" in output
    assert "restarting it in 1 s" in output and f"worker started (pid {after['worker']})" in output
    # In order: web, workers and beat first, the embedded Redis last.
    first, last = output.index("stopping web, worker, trainer, beat, node ("), output.index("stopping redis (")
    assert (
        first < max(output.index(f"{name} stopped (") for name in ("web", "worker", "trainer", "beat", "node")) < last
    )
    assert last < output.index("redis stopped (") < output.index("everything stopped")
    time.sleep(1)
    assert not _ours(tmp_path), _ours(tmp_path)
