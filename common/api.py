"""The API's plumbing that is not about who calls: the platform's error shape, request bodies, pagination.

Errors have the shape ``{"error": {"code", "message"}}``; client errors carry ``x-should-retry: false`` so that
the SDK does not retry what cannot succeed. Authentication (``api_view``) is accounts' (accounts/api.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from common.error_codes import BAD_BODY, BAD_PARAM, InputError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered to the client in the platform's error shape."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None, *, retry_after: int = 0):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.retry_after = retry_after  # seconds, sent as Retry-After (a 429 or 503 that will pass)

    @classmethod
    def from_input(cls, exc: InputError, status: int = 400) -> ApiError:
        """A service's refusal (common.error_codes.InputError) as the API answers it."""
        return cls(status, exc.code, exc.message, exc.param)

    def response(self) -> JsonResponse:
        response = error_response(self.status, self.code, self.message, self.param)
        if self.retry_after:
            response["Retry-After"] = str(self.retry_after)
        return response


def error_response(status: int, code: str, message: str, param: str | None = None) -> JsonResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if param:
        body["error"]["param"] = param
    response = JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})
    if status < 500 and status not in (408, 409, 429):
        response["x-should-retry"] = "false"
    return response


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


async def read_asgi_body(scope: dict, receive, limit: int) -> bytes:
    """A request body read from ASGI, refused (413, in the API's error shape) as soon as it passes ``limit``
    bytes: a declared Content-Length over it before anything is read, a streamed body at the chunk that
    crosses it. Nothing past the limit is buffered. Raises ClientGone when the client leaves first."""
    too_big = ApiError(413, BAD_BODY, f"The request body is larger than the limit of {limit / 2**20:g} MiB.", "body")
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise ApiError(400, BAD_BODY, "The Content-Length header is not a number.") from None
            if declared > limit:
                raise too_big
    chunks, received = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        received += len(part)
        if received > limit:
            raise too_big
        chunks.append(part)
        if not message.get("more_body"):
            return b"".join(chunks)


def parse_json_body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, BAD_BODY, f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, BAD_BODY, "The request body is not valid JSON: it is nested too deeply.") from None
    if not isinstance(body, dict):
        raise ApiError(400, BAD_BODY, "The request body must be a JSON object.")
    return body


def exception_response(request: HttpRequest, exc: Exception) -> JsonResponse:
    """An exception raised while answering an API request, as the platform's error: an ApiError as itself, a
    body over DATA_UPLOAD_MAX_MEMORY_SIZE 413, an unreadable body 400, Django's 404 and 403 as such, anything
    else a logged 500. api_view and ApiErrorsMiddleware (for API views that are not api_view's) both use it."""
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 2**20
        return error_response(413, BAD_BODY, f"The request body is larger than the limit of {limit:g} MiB.", "body")
    if isinstance(exc, SuspiciousOperation | MultiPartParserError | UnreadablePostError):
        return error_response(400, BAD_BODY, f"The request body cannot be read: {exc}")
    if isinstance(exc, Http404):
        return error_response(404, "404", f"Nothing at {request.path}.")
    if isinstance(exc, PermissionDenied):
        return error_response(403, "403", "You may not do this.")
    logger.error("API error in %s", request.path, exc_info=exc)
    return error_response(500, "500", "Internal server error; the error was logged.")


class ApiErrorsMiddleware:
    """Under /api/paas/v4/, an exception that a view lets out is answered in the platform's error shape (JSON),
    never Django's HTML error pages."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not request.path.startswith(settings.API_PREFIX):
            return None
        return exception_response(request, exception)


@csrf_exempt  # an API client has no CSRF token: a POST to an unknown path gets the JSON 404 too
def api_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    return error_response(404, "404", f"No API endpoint at {request.path}.")


MAX_PAGE = 100


def page_limit(request: HttpRequest, default: int = 20) -> int:
    """``?limit=``: a whole number from 1; more than 100 is taken as 100."""
    try:
        limit = int(request.GET.get("limit") or default)
    except ValueError:
        raise ApiError(400, BAD_PARAM, "limit must be a whole number.", "limit") from None
    if limit < 1:
        raise ApiError(400, BAD_PARAM, f"limit must be between 1 and {MAX_PAGE}.", "limit")
    return min(limit, MAX_PAGE)


def cursor_page(request: HttpRequest, qs, *, serialize: Callable, noun: str, orderable: bool = False) -> JsonResponse:
    """One page of ``{object: "list", data, has_more}``, newest first, after the row ``?after=<public id>``.

    The one pagination of the API (files, fine-tuning jobs, deployments): rows are ordered by
    (created_at, id), so rows created in the same instant page stably; ``orderable`` accepts ``?order=asc``."""
    limit = page_limit(request)
    order = (request.GET.get("order") or "desc").lower() if orderable else "desc"
    if order not in ("asc", "desc"):
        raise ApiError(400, BAD_PARAM, "order must be asc or desc.", "order")
    after = request.GET.get("after")
    if after:
        anchor = qs.filter(public_id=after).values_list("id", "created_at").first()
        if anchor is None:
            raise ApiError(400, BAD_PARAM, f"after names no {noun} of yours: {after}.", "after")
        pk, created = anchor
        if order == "asc":
            qs = qs.filter(created_at__gte=created).exclude(created_at=created, id__lte=pk)
        else:
            qs = qs.filter(created_at__lte=created).exclude(created_at=created, id__gte=pk)
    qs = qs.order_by("created_at", "id") if order == "asc" else qs.order_by("-created_at", "-id")
    rows = list(qs[: limit + 1])
    return JsonResponse(
        {"object": "list", "data": [serialize(row) for row in rows[:limit]], "has_more": len(rows) > limit},
        json_dumps_params={"ensure_ascii": False},
    )
