from __future__ import annotations

import asyncio
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings


def redis_client(timeout: float | None = None) -> redis.Redis:
    """A client for the console's Redis (embedded socket or REDIS_URL)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)


_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # forgotten with their loop


def async_redis_client() -> aioredis.Redis:
    """The asyncio client of the console's Redis for the running event loop (one a loop: uvicorn runs one a
    process), shared by everything the serving path counts or reads there (API keys, limits, instances)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    return client
