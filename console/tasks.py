from __future__ import annotations

import time

from celery import shared_task

from .redis import redis_client

BEAT_KEY = "console:beat:last"


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
