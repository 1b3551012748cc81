"""Counts of events per caller in fixed windows, kept in Redis: the API's requests per key, failed API
authentications per client address. With Redis away nothing is limited (a warning is logged) rather than every
request failing; the serving gateway counts chat calls the same way (deployments/limits.py)."""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def client() -> redis.Redis:
    """One client (a connection pool) a process for REDIS_URL (accounts.keycache uses it too)."""
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url) or redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
            _clients[url] = client
    return client


def retry_after(now: float, window: int) -> int:
    """Whole seconds until the fixed window that holds ``now`` ends (at least 1): a 429's Retry-After."""
    return max(1, int(window - now % window) + 1)


def window_key(name: str, ident: str, now: float, window: int) -> str:
    return f"ratelimit:{name}:{ident}:{int(now // window)}"


def rate_hit(*, name: str, ident: str, limit: int, window: int = 60) -> int:
    """Count one event of ``ident`` under ``name``: 0 while the window holds at most ``limit`` of them, else the
    seconds until it ends. A limit of 0 is no limit."""
    if not limit:
        return 0
    now = time.time()
    key = window_key(name, ident, now, window)
    try:
        with client().pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, window * 2)
            count, _ = pipe.execute()
    except (redis.RedisError, OSError):
        logger.warning("could not count %s of %s; not limited", name, ident, exc_info=True)
        return 0
    return retry_after(now, window) if count > limit else 0


def rate_exceeded(*, name: str, ident: str, limit: int, window: int = 60) -> int:
    """Without counting: the seconds until the window ends when ``ident`` has already passed ``limit``, else 0."""
    if not limit:
        return 0
    now = time.time()
    try:
        count = int(client().get(window_key(name, ident, now, window)) or 0)
    except (redis.RedisError, OSError):
        logger.warning("could not read the count of %s of %s; not limited", name, ident, exc_info=True)
        return 0
    return retry_after(now, window) if count >= limit else 0
