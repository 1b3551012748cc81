"""Uploads that stop at the size limit while they stream in, and hash as they go.

``DatasetUploadHandler`` writes the file part to a temporary file (which is
removed if anything goes wrong) and raises ``StopUpload`` the moment the data
passes the limit, so a too-large or cut-off upload leaves nothing behind.
``DatasetUploadLimitMiddleware`` does the same one level down for the ASGI
server, because Django's ASGI handler reads a whole request body to disk before
any view runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable

from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from common.error_codes import TOO_LARGE

from . import conf


class DatasetUploadHandler(TemporaryFileUploadHandler):
    """Stream the upload to a temporary file, hashing it, and stop past ``max_bytes``."""

    def __init__(self, request: HttpRequest | None = None, *, max_bytes: int | None = None):
        super().__init__(request)
        self.max_bytes = conf.max_bytes() if max_bytes is None else max_bytes
        self.received = 0
        self.too_large = False
        self.sha256 = hashlib.sha256()
        self.field_name_seen: str | None = None

    def new_file(self, field_name, *args, **kwargs):
        self.received = 0
        self.sha256 = hashlib.sha256()
        self.field_name_seen = field_name
        return super().new_file(field_name, *args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int):
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self.too_large = True
            # connection_reset: stop reading; the temporary file is closed (so removed) by the parser.
            raise StopUpload(connection_reset=True)
        self.sha256.update(raw_data)
        return super().receive_data_chunk(raw_data, start)


def install_upload_handler(request: HttpRequest) -> DatasetUploadHandler:
    """Make ``request`` parse its upload with a fresh ``DatasetUploadHandler`` (before POST is read)."""
    handler = DatasetUploadHandler(request)
    request.upload_handlers = [handler]
    return handler


def with_upload_limit(too_large: Callable[[HttpRequest], HttpResponse]) -> Callable:
    """View decorator for a form that carries a dataset upload.

    Before anything reads the body, a POST whose declared size is past the limit gets
    ``too_large(request)`` and the streaming ``DatasetUploadHandler`` is installed; only
    then is CSRF checked (which reads the body). The view receives it as ``handler``
    (None for GET) and answers ``too_large`` itself when ``handler.too_large``.
    """

    def decorator(view: Callable) -> Callable:
        protected = csrf_protect(view)

        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            handler = None
            if request.method == "POST":
                if content_length_too_large(request):
                    return too_large(request)
                handler = install_upload_handler(request)
            return protected(request, *args, handler=handler, **kwargs)

        return wrapper

    return decorator


def content_length_too_large(request: HttpRequest) -> bool:
    """The declared body is beyond the limit plus room for the multipart framing."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > conf.max_bytes() + conf.multipart_slack()


# The paths whose POST body is a dataset upload: datasets' own, and those the apps above register from their
# ``AppConfig.ready()`` with ``register_upload_url(url_name)`` (jobs: the create form takes a file too).
_upload_url_names: list[str] = ["datasets:upload"]
_upload_paths: tuple[str, ...] | None = None
API_UPLOAD_PATH = "/api/paas/v4/files"


def register_upload_url(url_name: str) -> None:
    global _upload_paths
    if url_name not in _upload_url_names:
        _upload_url_names.append(url_name)
        _upload_paths = None


def upload_paths() -> tuple[str, ...]:
    """Resolved once, at the first request (the URLconf cannot be loaded while the apps are)."""
    global _upload_paths
    if _upload_paths is None:
        from django.urls import reverse

        _upload_paths = (*[reverse(name) for name in _upload_url_names], API_UPLOAD_PATH)
    return _upload_paths


class DatasetUploadLimitMiddleware:
    """ASGI middleware: answer 413 to an upload whose body passes the dataset size limit.

    Checks Content-Length up front, and counts the body as it arrives (a chunked
    body has no Content-Length); past the limit the app is told the client went
    away, so nothing it buffered is kept, and the client gets a 413.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not scope.get("path", "").startswith(upload_paths())
        ):
            return await self.app(scope, receive, send)
        limit = conf.max_bytes() + conf.multipart_slack()
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return await self._refuse(scope, send)
        state = {"received": 0, "cut": False, "started": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["cut"] = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            if state["cut"] and not state["started"]:
                return
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        if state["cut"] and not state["started"]:
            await self._refuse(scope, send)

    async def _refuse(self, scope, send):
        limit_mib = conf.max_bytes() // (1024 * 1024)
        message = f"The file is larger than the limit of {limit_mib} MiB."
        if scope.get("path", "").startswith("/api/"):
            body = json.dumps({"error": {"code": TOO_LARGE, "message": message}}).encode()
            content_type = b"application/json"
        else:
            body = json.dumps({"errors": {"file": [message]}}).encode()
            content_type = b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-should-retry", b"false"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
