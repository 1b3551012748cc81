"""ASGI fast path for the playground's chat endpoint (``POST /console/playground/chat/``).

The page's calls are the API's calls with a session in place of an API key. Going through Django's whole
middleware chain (several sync-only middlewares, each a hop to the one sync thread) added about 7 ms to the time to
first token of one stream and 20+ ms with a few at once, so this path does only what the endpoint needs, with
Django's own code, in the gateway's one hop off the event loop: the session (the configured engine), the signed-in user
(``django.contrib.auth.get_user``, which checks the session's password hash) and the CSRF check
(``CsrfViewMiddleware``, cookie or session token and origin rules as configured). Then the gateway's ``handle``
and ``send_reply`` answer exactly as for an API key. This ``endpoint`` is the one implementation: the URL's
Django view (``experience.views.playground_chat``, for ``reverse()`` and the test client) hands it the request.
"""

from __future__ import annotations

import io
from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.middleware.csrf import CsrfViewMiddleware

from common.api import ApiError, ClientGone, read_asgi_body
from common.error_codes import BAD_PARAM, NOT_SIGNED_IN
from deployments import conf as serving_conf
from deployments import gateway

PATH = "/console/playground/chat/"


def _authorize(scope: dict, body: bytes):
    """The signed-in user of the request, or an ApiError (403 CSRF, 401 not signed in)."""
    request = ASGIRequest(scope, io.BytesIO(body))
    try:
        request.get_host()  # ALLOWED_HOSTS, as Django's CommonMiddleware would check it
    except DisallowedHost as exc:
        raise ApiError(400, BAD_PARAM, str(exc)) from None
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(
        request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    )
    csrf = CsrfViewMiddleware(lambda _request: None)
    csrf.process_request(request)
    if csrf.process_view(request, None, (), {}) is not None:
        raise ApiError(403, "csrf_failed", "CSRF verification failed: reload the page and try again.")
    user = get_user(request)
    if not user.is_authenticated:
        raise ApiError(401, NOT_SIGNED_IN, "Sign in to the console first.")
    return user


async def endpoint(scope, receive, send) -> None:
    """``/console/playground/chat/``: the body (bounded), then the session and CSRF check with the route, in the
    gateway's one hop off the event loop (one hop, one connection check, as for an API key)."""
    if scope["method"] != "POST":
        return await gateway.send_reply(await gateway.handle(scope["method"], b"", None, user=None), receive, send)
    try:
        body = await read_asgi_body(scope, receive, serving_conf.max_body_bytes())
    except ApiError as exc:
        return await gateway.send_reply(gateway.Reply.error(exc), receive, send)
    except ClientGone:
        return
    headers = dict(scope.get("headers", []))
    request_id = headers.get(b"x-request-id", b"").decode("latin-1") or None
    call = gateway.handle("POST", body, request_id, user=lambda: _authorize(scope, body))
    await gateway.answer(call, receive, send)


def asgi_app(inner):
    """Serve the playground's chat endpoint here; everything else goes to ``inner``."""

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == PATH:
            return await endpoint(scope, receive, send)
        return await inner(scope, receive, send)

    return app
