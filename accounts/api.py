"""Authentication for the SDK-compatible API under /api/paas/v4/: ``api_view``.

It takes ``Authorization: Bearer <key_id>.<secret>`` or the HS256 JWT that the ``zhipuai`` SDK signs with the
key's secret, counts failed authentications per address and requests per key, and answers every failure in the
platform's error shape, which is common/api.py's (``ApiError``, ``exception_response``) with the rest of the
plumbing that is not about who calls.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

import jwt
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from accounts import keycache, ratelimit
from accounts.models import ApiKey
from common.api import ApiError, exception_response
from common.db import connection_checked
from common.error_codes import (
    BAD_KEY,
    BAD_PARAM,
    KEY_DISABLED,
    NO_AUTH,
    RATE_LIMITED,
    TOKEN_EXPIRED,
    TOO_MANY_FAILURES,
)
from common.redis import async_redis_client


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message)


def authenticate_api_key(header: str | None) -> ApiKey:
    """Return the active key behind an Authorization header, or raise a 401 ApiError."""
    if not header:
        raise _unauthorized(NO_AUTH, "The Authorization header is missing.")
    scheme, _sep, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized(NO_AUTH, "The Authorization header must be 'Bearer <API key>'.")
    if token.count(".") == 2:
        return _authenticate_jwt(token)
    key_id, sep, secret = token.partition(".")
    if not sep or not key_id or not secret:
        raise _unauthorized(BAD_KEY, "The API key is malformed: expected <id>.<secret>.")
    key = ApiKey.objects.select_related("user").filter(key_id=key_id).first()
    if key is None or not key.check_secret(secret):
        raise _unauthorized(BAD_KEY, "The API key is invalid.")
    return _check_usable(key)


def _authenticate_jwt(token: str) -> ApiKey:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _unauthorized(BAD_KEY, "The token is not a valid JWT.") from None
    key_id = claims.get("api_key")
    if not isinstance(key_id, str):
        raise _unauthorized(BAD_KEY, "The token names no api_key.")
    key = ApiKey.objects.select_related("user").filter(key_id=key_id).first()
    if key is None:
        raise _unauthorized(BAD_KEY, "The API key is invalid.")
    try:
        # The SDK puts exp and timestamp in milliseconds, so PyJWT's own exp check
        # (in seconds) would never fire: check it here instead.
        claims = jwt.decode(token, key.derive_secret(), algorithms=["HS256"], options={"verify_exp": False})
    except jwt.PyJWTError:
        raise _unauthorized(BAD_KEY, "The token's signature does not match the API key.") from None
    _check_jwt_times(claims)
    return _check_usable(key)


def _seconds(exp: float) -> float:
    """A JWT's ``exp`` in seconds (the SDK puts it in milliseconds)."""
    return exp / 1000 if exp > 10**11 else exp


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_jwt_times(claims: dict) -> None:
    """A token's ``timestamp`` (when it was made, in ms) and ``exp``: both required, the lifetime between them
    and the distance of ``timestamp`` into the future (clock skew) bounded by settings; each refusal says which."""
    now = time.time()
    exp, issued = claims.get("exp"), claims.get("timestamp")
    if not _number(exp):
        raise _unauthorized(BAD_KEY, "The token has no expiry (exp).")
    if issued is None:
        raise _unauthorized(
            BAD_KEY, "The token has no timestamp (when it was made, in milliseconds, as the SDK sends it)."
        )
    if not _number(issued):
        raise _unauthorized(BAD_KEY, "The token's timestamp must be a number of milliseconds.")
    if issued < 10**11:
        raise _unauthorized(BAD_KEY, "The token's timestamp must be in milliseconds (it reads as seconds).")
    issued_seconds = issued / 1000
    exp_seconds = _seconds(exp)
    if exp_seconds < now:
        raise _unauthorized(TOKEN_EXPIRED, "The token has expired.")
    skew, lifetime = settings.API_JWT_MAX_CLOCK_SKEW, settings.API_JWT_MAX_LIFETIME
    if issued_seconds - now > skew:
        raise _unauthorized(
            BAD_KEY,
            f"The token's timestamp is {issued_seconds - now:.0f} s in the future, more than the {skew} s of clock "
            "skew allowed: check the clock of the machine that made it.",
        )
    if exp_seconds - issued_seconds > lifetime:
        raise _unauthorized(
            BAD_KEY,
            f"The token is valid for {exp_seconds - issued_seconds:.0f} s (exp - timestamp), longer than the "
            f"{lifetime} s allowed: make a token that expires sooner.",
        )


def _check_usable(key: ApiKey) -> ApiKey:
    if key.revoked_at is not None:
        raise _unauthorized(KEY_DISABLED, "The API key has been revoked.")
    if not key.user.is_active:
        raise _unauthorized(KEY_DISABLED, "The account of this API key is disabled.")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_view(methods: list[str]) -> Callable:
    """Authenticate, restrict methods, and turn every failure into the error shape."""

    def decorator(view: Callable) -> Callable:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise ApiError(405, BAD_PARAM, f"Method {request.method} is not allowed here.")
                key = authenticate_throttled(request.headers.get("Authorization"), request.META.get("REMOTE_ADDR", ""))
                request.api_key = key
                request.user = key.user
                _count_request(key)
                return view(request, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure is answered in the platform's shape
                return exception_response(request, exc)

        return wrapper

    return decorator


def _throttled(address: str, limit: int, wait: int) -> ApiError:
    return ApiError(
        429,
        TOO_MANY_FAILURES,
        f"More than {limit} failed authentications a minute from {address} "
        f"(API_AUTH_FAILURES_PER_MINUTE). Retry in {wait} s.",
        retry_after=wait,
    )


def authenticate_throttled(header: str | None, address: str) -> ApiKey:
    """The active key behind an Authorization header, as ``authenticate_api_key``, with failed authentications
    counted per client ``address`` (API_AUTH_FAILURES_PER_MINUTE): past the limit, requests from that address get
    429 with Retry-After in the platform's shape, and are not even checked until the minute ends. Every path that
    takes an API key uses it: api_view (REMOTE_ADDR) and the chat gateway's ASGI endpoint (``scope["client"]``,
    through ``authenticate_throttled_async``), before either reads a byte of the body. Sync (the database,
    Redis)."""
    address = address or "-"
    limit = settings.API_AUTH_FAILURES_PER_MINUTE
    wait = ratelimit.rate_exceeded(name="api-auth-failures", ident=address, limit=limit)
    if wait:
        raise _throttled(address, limit, wait)
    try:
        return authenticate_api_key(header)
    except ApiError as exc:
        if exc.status == 401:
            wait = ratelimit.rate_hit(name="api-auth-failures", ident=address, limit=limit)
            if wait:
                raise _throttled(address, limit, wait) from None
        raise


async def authenticate_throttled_async(header: str | None, address: str, also: Sequence[str] = ()) -> keycache.Grant:
    """``authenticate_throttled`` for the chat path, on the event loop: a token that authenticated within the last
    KEY_CACHE_SECONDS and whose key is not marked revoked is found in Redis, in one read with the address's
    failed authentications (accounts/keycache.py) and the keys named in ``also`` (what the caller reads next: one
    round trip, not two; their values in the grant's ``also``); any other is checked in the database, in a thread,
    by ``authenticate_throttled``, and remembered. With Redis away every call is checked in the database."""
    token = header.strip().partition(" ")[2].strip() if header else ""
    key_id = keycache.key_id_of(token) if token else None
    if key_id is not None and header is not None and header.strip()[:7].lower() == "bearer ":
        ident, limit = address or "-", settings.API_AUTH_FAILURES_PER_MINUTE
        names = [keycache.entry_name(key_id, token), keycache.revoked_name(key_id)]
        if limit:
            names.append(ratelimit.window_key("api-auth-failures", ident, time.time(), 60))
        try:
            values = await async_redis_client().mget([*names, *also])
        except Exception:  # noqa: BLE001 - Redis away: the database decides (and the sync path logs it)
            values = None
        if values is not None:
            if limit and int(values[2] or 0) >= limit:
                raise _throttled(ident, limit, ratelimit.retry_after(time.time(), 60))
            grant = None if values[1] else keycache.grant_of(values[0], key_id)
            if grant is not None:
                return dataclasses.replace(grant, also=tuple(values[len(names) :])) if also else grant
    return await sync_to_async(_authenticate_and_remember, thread_sensitive=False)(header, address)


def _authenticate_and_remember(header: str | None, address: str) -> keycache.Grant:
    connection_checked()
    key = authenticate_throttled(header, address)
    token = (header or "").strip().partition(" ")[2].strip()
    expires_at = None
    if token.count(".") == 2:  # a JWT, checked: remembered no longer than it is valid
        expires_at = _seconds(jwt.decode(token, options={"verify_signature": False})["exp"])
    keycache.remember(token, key.key_id, key.user_id, key.user.is_staff, expires_at)
    return keycache.Grant(key.key_id, keycache.Caller(key.user_id, key.user.is_staff))


def _count_request(key: ApiKey) -> None:
    """Requests a minute per API key (outside chat, which the serving gateway counts): 429 past the limit."""
    limit = settings.API_REQUESTS_PER_MINUTE
    wait = ratelimit.rate_hit(name="api", ident=key.key_id, limit=limit)
    if wait:
        raise ApiError(
            429,
            RATE_LIMITED,
            f"More than {limit} requests a minute with this key (API_REQUESTS_PER_MINUTE). Retry in {wait} s.",
            retry_after=wait,
        )
