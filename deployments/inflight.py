"""Requests in flight per instance, counted in Redis by the gateway: least busy first, and drains wait for zero."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from django.conf import settings

# A gateway process that dies mid-request leaves its count behind: keys expire after an hour without calls.
TTL = 3600


def key(instance_id: int) -> str:
    return f"serving:inflight:{instance_id}"


def in_flight(client: redis.Redis, instance_id: int) -> int:
    value = client.get(key(instance_id))
    return max(0, int(value or 0))


_async_clients: dict[int, aioredis.Redis] = {}


def async_client() -> aioredis.Redis:
    """One asyncio Redis client per event loop (uvicorn runs one loop per process)."""
    import asyncio

    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = _async_clients[loop_id] = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    return client


async def counts(instance_ids: list[int]) -> list[int]:
    if not instance_ids:
        return []
    values = await async_client().mget([key(i) for i in instance_ids])
    return [int(v or 0) for v in values]


async def acquire(instance_id: int) -> None:
    async with async_client().pipeline(transaction=False) as pipe:
        pipe.incr(key(instance_id))
        pipe.expire(key(instance_id), TTL)
        await pipe.execute()


async def release(instance_id: int) -> None:
    await async_client().decr(key(instance_id))
