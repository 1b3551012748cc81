"""Plumbing for the SDK-compatible API under /api/paas/v4/.

Authentication takes ``Authorization: Bearer <key_id>.<secret>`` or the HS256
JWT that the ``zhipuai`` SDK signs with the key's secret. Errors have the
platform's shape ``{"error": {"code", "message"}}``; client errors carry
``x-should-retry: false`` so that the SDK does not retry what cannot succeed.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from .models import ApiKey

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered to the client in the platform's error shape."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def response(self) -> JsonResponse:
        return error_response(self.status, self.code, self.message, self.param)


def error_response(status: int, code: str, message: str, param: str | None = None) -> JsonResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if param:
        body["error"]["param"] = param
    response = JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})
    if status < 500 and status not in (408, 409, 429):
        response["x-should-retry"] = "false"
    return response


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message)


def authenticate_api_key(header: str | None) -> ApiKey:
    """Return the active key behind an Authorization header, or raise a 401 ApiError."""
    if not header:
        raise _unauthorized("1001", "The Authorization header is missing.")
    scheme, _sep, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("1001", "The Authorization header must be 'Bearer <API key>'.")
    if token.count(".") == 2:
        return _authenticate_jwt(token)
    key_id, sep, secret = token.partition(".")
    if not sep or not key_id or not secret:
        raise _unauthorized("1002", "The API key is malformed: expected <id>.<secret>.")
    key = ApiKey.objects.select_related("user").filter(key_id=key_id).first()
    if key is None or not key.check_secret(secret):
        raise _unauthorized("1002", "The API key is invalid.")
    return _check_usable(key)


def _authenticate_jwt(token: str) -> ApiKey:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _unauthorized("1002", "The token is not a valid JWT.") from None
    key_id = claims.get("api_key")
    if not isinstance(key_id, str):
        raise _unauthorized("1002", "The token names no api_key.")
    key = ApiKey.objects.select_related("user").filter(key_id=key_id).first()
    if key is None:
        raise _unauthorized("1002", "The API key is invalid.")
    try:
        # The SDK puts exp and timestamp in milliseconds, so PyJWT's own exp check
        # (in seconds) would never fire: check it here instead.
        claims = jwt.decode(token, key.derive_secret(), algorithms=["HS256"], options={"verify_exp": False})
    except jwt.PyJWTError:
        raise _unauthorized("1002", "The token's signature does not match the API key.") from None
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise _unauthorized("1002", "The token has no expiry (exp).")
    exp_seconds = exp / 1000 if exp > 10**11 else exp
    if exp_seconds < time.time():
        raise _unauthorized("1003", "The token has expired.")
    return _check_usable(key)


def _check_usable(key: ApiKey) -> ApiKey:
    if key.revoked_at is not None:
        raise _unauthorized("1004", "The API key has been revoked.")
    if not key.user.is_active:
        raise _unauthorized("1004", "The account of this API key is disabled.")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def parse_json_body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "1210", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "1210", "The request body must be a JSON object.")
    return body


def api_view(methods: list[str]) -> Callable:
    """Authenticate, restrict methods, and turn every failure into the error shape."""

    def decorator(view: Callable) -> Callable:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise ApiError(405, "1214", f"Method {request.method} is not allowed here.")
                key = authenticate_api_key(request.headers.get("Authorization"))
                request.api_key = key
                request.user = key.user
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()
            except Exception:
                logger.exception("API error in %s", request.path)
                return error_response(500, "500", "Internal server error; the error was logged.")

        return wrapper

    return decorator


@csrf_exempt  # an API client has no CSRF token: a POST to an unknown path gets the JSON 404 too
def api_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    return error_response(404, "404", f"No API endpoint at {request.path}.")


MAX_PAGE = 100


def page_limit(request: HttpRequest, default: int = 20) -> int:
    """``?limit=``: a whole number from 1; more than 100 is taken as 100."""
    try:
        limit = int(request.GET.get("limit") or default)
    except ValueError:
        raise ApiError(400, "1214", "limit must be a whole number.", "limit") from None
    if limit < 1:
        raise ApiError(400, "1214", f"limit must be between 1 and {MAX_PAGE}.", "limit")
    return min(limit, MAX_PAGE)


def cursor_page(request: HttpRequest, qs, *, serialize: Callable, noun: str, orderable: bool = False) -> JsonResponse:
    """One page of ``{object: "list", data, has_more}``, newest first, after the row ``?after=<public id>``.

    The one pagination of the API (files, fine-tuning jobs, deployments): rows are ordered by
    (created_at, id), so rows created in the same instant page stably; ``orderable`` accepts ``?order=asc``."""
    limit = page_limit(request)
    order = (request.GET.get("order") or "desc").lower() if orderable else "desc"
    if order not in ("asc", "desc"):
        raise ApiError(400, "1214", "order must be asc or desc.", "order")
    after = request.GET.get("after")
    if after:
        anchor = qs.filter(public_id=after).values_list("id", "created_at").first()
        if anchor is None:
            raise ApiError(400, "1214", f"after names no {noun} of yours: {after}.", "after")
        pk, created = anchor
        if order == "asc":
            qs = qs.filter(created_at__gte=created).exclude(created_at=created, id__lte=pk)
        else:
            qs = qs.filter(created_at__lte=created).exclude(created_at=created, id__gte=pk)
    qs = qs.order_by("created_at", "id") if order == "asc" else qs.order_by("-created_at", "-id")
    rows = list(qs[: limit + 1])
    return JsonResponse({"object": "list", "data": [serialize(row) for row in rows[:limit]],
                         "has_more": len(rows) > limit}, json_dumps_params={"ensure_ascii": False})
