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
    keep = {k: v for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "CONSOLE_ENV", "CONSOLE_VAR_DIR",
                         "CONSOLE_MODELS_DIR", "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    return {**keep, "CONSOLE_VAR_DIR": str(tmp_path / "var"), "PORT": str(port), "CONSOLE_ADMIN_PASSWORD": "pw-123"}


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
        result = subprocess.run(["./run", "up"], cwd=ROOT, env=_env(tmp_path, port), capture_output=True,
                                text=True, timeout=300)
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr and "Nothing was started" in result.stderr
    assert not _ours(tmp_path)


@pytest.mark.timeout(400)
def test_up_serves_then_ctrl_c_stops_every_process(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(["./run", "up"], cwd=ROOT, env=_env(tmp_path, port), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, health = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert health is not None and health.status_code == 200, health and health.text
        workers = health.json()["checks"]["celery"]["workers"]
        assert any(w.startswith("worker@") for w in workers) and any(w.startswith("trainer@") for w in workers)
        login = httpx.get(f"http://127.0.0.1:{port}/console/login/")
        assert login.status_code == 200 and "Log in to the console" in login.text
        assert httpx.get(f"http://127.0.0.1:{port}/static/django_htmx/htmx-2.min.js").status_code == 200
        running = _ours(tmp_path)
        for name in ("uvicorn", "console.embedded_redis", "redis-server", "worker -Q default,serving",
                     "worker -Q training", "beat"):
            assert any(name in cmd for cmd in running), (name, running)
    finally:
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
        output, _ = proc.communicate(timeout=60)
    assert "First run: created the admin account." in output and "password: pw-123" in output
    assert f"http://127.0.0.1:{port}/console/" in output
    time.sleep(1)
    assert not _ours(tmp_path), _ours(tmp_path)
