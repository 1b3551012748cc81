"""Routes the gateway resolved, kept in its process while nothing they were read from has changed.

A chat call of a caller already known (an API key's) looks for its route here first: keyed by the caller (id and
staff flag: what ``gateway.resolve`` reads of them) and the model code, and valid while the *generation* it was
stored under is still the one in Redis. Whatever a route is read from bumps the generation after its commit
(``changed``): a deployment or an instance changing state (their state machines' ``on_change``; not an instance's
health counters), a deployment or an instance saved whole or deleted (created, or edited in the admin), any save or
delete of a base model or a fine-tune (deleted, its weights promoted). So a cancelled deployment, a stopped
instance or a deleted fine-tune is never routed to from a cached route, in any process. The generation
is read with the API key, in the same Redis round trip (``generation_read``; again, on the event loop, after a
slow upload or with no key's read): that replaces the hop to a thread and the route's queries.

Only routes that resolved are kept (an error is worked out again at each call). With Redis away nothing is kept
or used; a bump that could not reach Redis leaves other processes' routes for at most ``TTL_SECONDS``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from django.db import transaction

from common.redis import async_redis_client, redis_client

if TYPE_CHECKING:
    from .gateway import Route

logger = logging.getLogger(__name__)
GENERATION_KEY = "serving:routes-generation"
TTL_SECONDS = 10.0
MAX_ROUTES = 10_000

Key = tuple[int, bool, str]
_routes: dict[Key, tuple[bytes, float, Route]] = {}


def key_of(user, code) -> Key | None:
    return (user.pk, bool(user.is_staff), code) if isinstance(code, str) else None


async def generation() -> bytes | None:
    """The routes' generation now (None with Redis away: nothing cached is used)."""
    try:
        value = await async_redis_client().get(GENERATION_KEY)
    except Exception:  # noqa: BLE001 - Redis away: routes are resolved from the database at each call
        return None
    return generation_read((value,))


def generation_read(values: tuple | None) -> bytes | None:
    """The generation from a read of ``GENERATION_KEY`` done with other keys (the API key's, in one round trip):
    None when it was not read."""
    if not values:
        return None
    return values[0] if isinstance(values[0], bytes) else b"0"


def get(key: Key | None, current: bytes | None) -> Route | None:
    if key is None or current is None:
        return None
    hit = _routes.get(key)
    if hit is None or hit[0] != current or time.monotonic() > hit[1]:
        return None
    return hit[2]


def put(key: Key | None, current: bytes | None, route: Route) -> None:
    if key is None or current is None:
        return
    if len(_routes) >= MAX_ROUTES:
        _routes.clear()
    _routes[key] = (current, time.monotonic() + TTL_SECONDS, route)


def changed(**_signal) -> None:
    """Something routes are read from changed: this process's cached routes go now, every process's once it is
    committed."""
    forget()
    transaction.on_commit(_bump)


def forget() -> None:
    """This process's cached routes go (also for a test, whose database is rolled back under them)."""
    _routes.clear()


def _bump() -> None:
    """A new generation: a route any process stored under an older one is not used again."""
    try:
        with redis_client(timeout=2) as client:
            client.incr(GENERATION_KEY)
    except Exception:  # noqa: BLE001 - the other processes' routes expire within TTL_SECONDS
        logger.warning("could not mark the gateway's cached routes stale; they expire in %ss", TTL_SECONDS)
