"""Limits per caller, checked before any work: requests a minute per API key (per signed-in user for console pages)
and calls in flight per user. Counted in Redis, beside the counts of requests in flight per instance; with Redis
away the limits are not enforced rather than failing every call (as routing falls back to random)."""

from __future__ import annotations

import logging
import time

from common.api import ApiError
from common.error_codes import RATE_LIMITED, TOO_MANY_RUNNING

from . import conf
from .inflight import async_client

logger = logging.getLogger(__name__)
TTL = 3600  # a gateway that dies mid-call leaves its count behind: gone after an hour without calls


def _user_key(user_id: int) -> str:
    return f"serving:user-inflight:{user_id}"


async def enter(user_id: int, rate_id: str) -> None:
    """Count one call of ``user_id`` (through ``rate_id``, an API key or a session) or raise a 429 with
    Retry-After. A call let in must ``leave()`` when it ends."""
    per_minute, concurrent = conf.requests_per_minute(), conf.concurrent_per_user()
    now = time.time()
    window = int(now // 60)
    rate_key = f"serving:rate:{rate_id}:{window}"
    try:
        async with async_client().pipeline(transaction=False) as pipe:
            pipe.incr(rate_key)
            pipe.expire(rate_key, 120)
            pipe.incr(_user_key(user_id))
            pipe.expire(_user_key(user_id), TTL)
            calls, _, running, _ = await pipe.execute()
    except Exception:  # noqa: BLE001 - Redis away: let the call through
        logger.warning("could not count the calls of user %s; limits not enforced", user_id, exc_info=True)
        return
    if per_minute and calls > per_minute:
        await leave(user_id)
        raise ApiError(
            429,
            RATE_LIMITED,
            f"More than {per_minute} requests a minute with this key (SERVING_REQUESTS_PER_MINUTE). Wait and retry.",
            retry_after=max(1, int(60 - now % 60) + 1),
        )
    if concurrent and running > concurrent:
        await leave(user_id)
        raise ApiError(
            429,
            TOO_MANY_RUNNING,
            f"{concurrent} of your calls are already running (SERVING_CONCURRENT_PER_USER): wait for one to finish.",
            retry_after=1,
        )


async def leave(user_id: int) -> None:
    try:
        await async_client().decr(_user_key(user_id))
    except Exception:  # noqa: BLE001 - Redis away: its count expires
        logger.warning("could not count the end of a call of user %s", user_id, exc_info=True)
