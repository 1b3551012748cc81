"""API keys that authenticated, remembered in Redis for a few seconds, so that the chat path checks a key with one
Redis read on the event loop instead of a database query in a thread (accounts.api.authenticate_throttled_async).

An entry is named by the key's id and a SHA-256 of the whole bearer token (the key's secret, or the SDK's JWT),
so only that exact token finds it: a wrong secret, or another user's key, never does; no secret is kept. It holds
the key's user (id, staff) and lives KEY_CACHE_SECONDS (a JWT's entry never past its expiry).

Revocation is immediate while Redis is up: revoking a key, deactivating its user or deleting it (services and
signals, accounts/services.py) sets a mark beside the entries of its id, and an entry whose key is marked is not
used. What the database learns otherwise (a key revoked or a user deactivated by a direct edit of the tables, or
while Redis was unreachable) takes effect within KEY_CACHE_SECONDS."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from accounts import ratelimit

logger = logging.getLogger(__name__)
KEY_CACHE_SECONDS = 5
# A revoked key's mark outlives any entry made before it (an authentication that read the key just before it was
# revoked may write its entry just after).
REVOKED_MARK_SECONDS = 3600


@dataclass(frozen=True)
class Caller:
    """An API key's user as the chat path needs it (from the cache: no database row)."""

    pk: int
    is_staff: bool = False
    is_active: bool = True
    is_authenticated: bool = True


@dataclass(frozen=True)
class Grant:
    """Who a bearer token authenticates: its key's id (the rate limit's) and its user; and the values of the other
    Redis keys the caller asked to have read in the same round trip (``authenticate_throttled_async``'s ``also``),
    or None where they were not read (the token was checked in the database, or Redis is away)."""

    key_id: str
    user: Caller
    also: tuple | None = None


def key_id_of(token: str) -> str | None:
    """The key id a bearer token names, read without checking it: ``<id>.<secret>``, or a JWT's ``api_key``."""
    if token.count(".") == 2:
        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, TypeError):
            return None
        key_id = claims.get("api_key") if isinstance(claims, dict) else None
        return key_id if isinstance(key_id, str) and key_id else None
    key_id, sep, secret = token.partition(".")
    return key_id if sep and key_id and secret else None


def entry_name(key_id: str, token: str) -> str:
    return f"apikey:{key_id}:{hashlib.sha256(token.encode()).hexdigest()}"


def revoked_name(key_id: str) -> str:
    return f"apikey-revoked:{key_id}"


def grant_of(entry: bytes | None, key_id: str) -> Grant | None:
    """The grant an entry holds (None for none, or one that is not well formed)."""
    if not entry:
        return None
    try:
        data = json.loads(entry)
        return Grant(key_id, Caller(int(data["user"]), bool(data["staff"])))
    except (ValueError, KeyError, TypeError):
        return None


def remember(token: str, key_id: str, user_id: int, is_staff: bool, expires_at: float | None = None) -> None:
    """Keep a token that authenticated for KEY_CACHE_SECONDS (a JWT's no later than ``expires_at``)."""
    ttl_ms = KEY_CACHE_SECONDS * 1000
    if expires_at is not None:
        ttl_ms = min(ttl_ms, int((expires_at - time.time()) * 1000))
    if ttl_ms <= 0:
        return
    entry = json.dumps({"user": user_id, "staff": is_staff})
    try:
        ratelimit.client().set(entry_name(key_id, token), entry, px=ttl_ms)
    except (redis.RedisError, OSError):
        logger.warning("could not remember API key %s; its next call checks the database", key_id, exc_info=True)


def forget(key_ids: Iterable[str]) -> None:
    """Mark keys revoked: their entries are not used from now on (while Redis is up; else within
    KEY_CACHE_SECONDS, when the entries expire)."""
    names = [revoked_name(key_id) for key_id in key_ids]
    if not names:
        return
    try:
        with ratelimit.client().pipeline(transaction=False) as pipe:
            for name in names:
                pipe.set(name, 1, ex=REVOKED_MARK_SECONDS)
            pipe.execute()
    except (redis.RedisError, OSError):
        logger.warning(
            "could not mark %s API key(s) revoked in Redis: calls already made with them may go on being "
            "accepted for up to %s s",
            len(names),
            KEY_CACHE_SECONDS,
            exc_info=True,
        )
