from __future__ import annotations

import atexit
import os
import threading
import time

import redis
from celery import shared_task

from common.redis import redis_client

BEAT_KEY = "console:beat:last"
# Set by the beat process itself every BEAT_ALIVE_EVERY seconds, expiring after three times that: /healthz reads
# it to know that beat runs (BEAT_KEY, written by a worker running beat's task, says that the whole loop works).
BEAT_ALIVE_KEY = "console:beat:alive"
BEAT_ALIVE_EVERY = 2


@shared_task(name="console.tasks.ping", ignore_result=False)
def ping(payload: str = "") -> dict:
    """A round trip through the broker: answers with what it was given."""
    return {"pong": payload, "at": time.time()}


@shared_task(name="console.tasks.beat_heartbeat")
def beat_heartbeat() -> float:
    """Run by beat every 30 s; /healthz shows when beat was last heard of."""
    now = time.time()
    with redis_client(timeout=5) as client:
        client.set(BEAT_KEY, now)
    return now


def beat_presence_start() -> None:
    """In the beat process: keep BEAT_ALIVE_KEY set while it runs, and remove it when beat stops."""
    client = redis_client(timeout=1)
    pid = str(os.getpid())

    def mark() -> None:
        while True:
            try:
                client.set(BEAT_ALIVE_KEY, pid, ex=BEAT_ALIVE_EVERY * 3)
            except (redis.RedisError, OSError):
                pass  # Redis restarting: the next mark sets it again
            time.sleep(BEAT_ALIVE_EVERY)

    def clear() -> None:
        try:
            if client.get(BEAT_ALIVE_KEY) == pid.encode():
                client.delete(BEAT_ALIVE_KEY)
        except (redis.RedisError, OSError):
            pass

    threading.Thread(target=mark, name="beat-presence", daemon=True).start()
    atexit.register(clear)
