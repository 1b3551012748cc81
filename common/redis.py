from __future__ import annotations

import redis
from django.conf import settings


def redis_client(timeout: float | None = None) -> redis.Redis:
    """A client for the console's Redis (embedded socket or REDIS_URL)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)
