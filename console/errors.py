"""The console's own error pages (templates/404.html, 403.html, 500.html, in the site's layout).

Django shows its technical 404 page (every URL pattern, no way back) whenever DEBUG is on, which is how
``./run up`` runs: ErrorPagesMiddleware answers a page that does not exist with the console's page in
development too. API paths keep answering in the platform's JSON error shape (common/api.py)."""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.contrib import messages
from django.core.handlers.exception import get_exception_response
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import render
from django.urls import Resolver404, get_resolver, get_urlconf, resolve
from django.utils.html import escape
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from django.views.decorators.csrf import requires_csrf_token

logger = logging.getLogger(__name__)

CSRF_FAILED = gettext_noop(
    "The form was out of date (the page was open for a long time, or you signed in or out in another tab). "
    "Reload the page and try again."
)
CSRF_RELOADED = gettext_noop(
    "The form was out of date (the page was open for a long time, or you signed in or out in another tab), so the "
    "page was reloaded. Try again."
)


# An absolute path of two or more parts, not inside a URL ("https://host/a/b") or a name ("THUDM/glm-4-9b-chat").
_SERVER_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+~-]+/)+([\w.@+~-]+)")


def without_server_paths(text: str) -> str:
    """``text`` for users: each absolute server path cut to its last part ("…/model.safetensors").

    For failure messages that come from an exception (an OSError names the file with its folders): the full text
    goes to the log, where staff read it."""
    return _SERVER_PATH.sub(r"…/\1", text)


# A line that names a Python exception ("OSError: …", "torch.OutOfMemoryError: …", "KeyboardInterrupt"), alone or
# after a logger's prefix ("ERROR 12-05 10:00:01 [core.py:390] ValueError: …").
_NAMED_EXCEPTION = re.compile(r"(?:^|\]\s)((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt)(?::\s.*)?)$")
# The line that ends a traceback, whatever the exception's name ("modelcards.weights.WeightsMissing: …").
_RAISED = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?::\s.*)?$")
EXCEPTION_CHARS = 300


def last_exception(log: str) -> str:
    """The last exception a process's output states, for users: its server paths cut (``without_server_paths``),
    at most EXCEPTION_CHARS characters; "" when it states none. The output itself goes to the log, for staff."""
    found, in_traceback = "", False
    for raw in log.splitlines():
        line = raw.strip()
        if line.endswith("Traceback (most recent call last):"):
            in_traceback = True
            continue
        if in_traceback and line and not raw[:1].isspace():  # the first line after the frames
            in_traceback = False
            if _RAISED.match(line):
                found = line
                continue
        named = _NAMED_EXCEPTION.search(line)
        if named:
            found = named.group(1)
    shown = without_server_paths(found)
    return shown if len(shown) <= EXCEPTION_CHARS else shown[: EXCEPTION_CHARS - 1] + "…"


def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return get_exception_response(request, get_resolver(get_urlconf()), 404, exc)


class ErrorPagesMiddleware:
    """With DEBUG on, a 404 of a console page is the console's 404 page, not Django's technical one.

    Goes after the authentication and language middleware, so that the page is in the reader's language and
    layout. With DEBUG off Django already uses the console's handlers, so this does nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.DEBUG and not request.path.startswith(settings.API_PREFIX):
            try:
                resolve(request.path_info, getattr(request, "urlconf", None))
            except Resolver404 as exc:
                return _not_found(request, exc)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if settings.DEBUG and isinstance(exception, Http404) and not request.path.startswith(settings.API_PREFIX):
            return _not_found(request, exception)
        return None  # 403 always goes to the console's handler; everything else as Django does


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a form whose token is missing or stale (an expired session, a page left open) gets the
    console's 403 page, which says to reload, instead of Django's bare page. The reason goes to the log only.

    htmx swaps no 403, so a button would seem to do nothing: an HTMX request reloads the page instead (a fresh
    token), and the reloaded page says why."""
    if getattr(request, "htmx", False):
        messages.error(request, _(CSRF_RELOADED))
        response = HttpResponse(status=403)
        response["HX-Refresh"] = "true"
        return response
    return render(request, "403.html", {"csrf_failed": True}, status=403)


@requires_csrf_token
def server_error(request: HttpRequest) -> HttpResponse:
    """The 500 page in the console's layout; a plain page if even that cannot be drawn (the database is down)."""
    try:
        return render(request, "500.html", status=500)
    except Exception:  # the page must never fail itself
        logger.exception("the 500 page could not be rendered")
        title = escape(_("Something went wrong"))
        text = escape(_("The error was logged. Try again in a moment, or go back to the console."))
        back = escape(_("Back to the console"))
        return HttpResponseServerError(
            f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f'<body><h1>{title}</h1><p>{text}</p><p><a href="/console/">{back}</a></p></body></html>'
        )
