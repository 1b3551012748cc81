"""What the gateway counts in Redis for the serving plane: requests in flight per instance (least busy first,
drains wait for zero), when an instance last made progress (a stuck one is replaced: the node agent reads it),
and when a public pool was last called (an idle pool scales down)."""

from __future__ import annotations

import time

import redis
import redis.asyncio as aioredis

from common.redis import async_redis_client

# A gateway process that dies mid-request leaves its count behind: keys expire after an hour without calls.
TTL = 3600
POOL_CALLED_TTL = 7 * 86400


def key(instance_id: int) -> str:
    return f"serving:inflight:{instance_id}"


def busy_key(instance_id: int) -> str:
    return f"serving:busy-since:{instance_id}"


def progress_key(instance_id: int) -> str:
    return f"serving:progress:{instance_id}"


def pool_key(deployment_id: int) -> str:
    return f"serving:pool-called:{deployment_id}"


def in_flight(client: redis.Redis, instance_id: int) -> int:
    value = client.get(key(instance_id))
    return max(0, int(value or 0))


def async_client() -> aioredis.Redis:
    """The event loop's asyncio Redis client (common.redis)."""
    return async_redis_client()


async def counts(instance_ids: list[int]) -> list[int]:
    if not instance_ids:
        return []
    values = await async_client().mget([key(i) for i in instance_ids])
    return [int(v or 0) for v in values]


async def acquire(instance_id: int, pool_id: int | None = None) -> None:
    """A call went to the instance (of the public pool ``pool_id``: noted as called, in the same round trip)."""
    async with async_client().pipeline(transaction=False) as pipe:
        pipe.incr(key(instance_id))
        pipe.expire(key(instance_id), TTL)
        # The moment it went from idle to busy: progress is judged from here when no token came yet.
        pipe.set(busy_key(instance_id), time.time(), nx=True, ex=TTL)
        if pool_id is not None:
            pipe.set(pool_key(pool_id), time.time(), ex=POOL_CALLED_TTL)
        await pipe.execute()


# One round trip: the count goes down, and the instance is no longer busy once it reaches zero.
RELEASE = """
local left = redis.call('DECR', KEYS[1])
if left <= 0 then redis.call('DEL', KEYS[2]) end
return left
"""


async def release(instance_id: int) -> None:
    await async_client().register_script(RELEASE)(keys=[key(instance_id), busy_key(instance_id)])


_last_mark: dict[int, float] = {}


def progress_due(instance_id: int) -> bool:
    """Whether this process should note the instance's progress now (at most once a second per instance)."""
    now = time.time()
    if now - _last_mark.get(instance_id, 0.0) < 1.0:
        return False
    if len(_last_mark) > 10_000:
        _last_mark.clear()
    _last_mark[instance_id] = now
    return True


async def progress(instance_id: int) -> None:
    """A token (or a whole answer) came from the instance."""
    await async_client().set(progress_key(instance_id), time.time(), ex=TTL)


def stalled_for(client: redis.Redis, instance_id: int, now: float | None = None) -> float:
    """Seconds the instance has had calls in flight without producing anything (0 when idle or progressing)."""
    count, busy_since, last = client.mget(key(instance_id), busy_key(instance_id), progress_key(instance_id))
    if int(count or 0) <= 0 or busy_since is None:
        return 0.0
    since = max(float(busy_since), float(last or 0.0))
    return max(0.0, (now or time.time()) - since)


def pool_touch_sync(client: redis.Redis, deployment_id: int) -> None:
    client.set(pool_key(deployment_id), time.time(), ex=POOL_CALLED_TTL)


def pool_last_call(client: redis.Redis, deployment_id: int) -> float | None:
    value = client.get(pool_key(deployment_id))
    return float(value) if value is not None else None
