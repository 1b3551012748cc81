"""The console's own error pages (templates/404.html, 403.html, 500.html, in the site's layout).

Django shows its technical 404 page (every URL pattern, no way back) whenever DEBUG is on, which is how
``./run up`` runs: ErrorPagesMiddleware answers a page that does not exist with the console's page in
development too. API paths keep answering in the platform's JSON error shape (console/api.py)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.handlers.exception import get_exception_response
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import render
from django.urls import Resolver404, get_resolver, get_urlconf, resolve
from django.utils.html import escape
from django.utils.translation import gettext as _
from django.views.decorators.csrf import requires_csrf_token

from .api import API_PREFIX

logger = logging.getLogger(__name__)


def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return get_exception_response(request, get_resolver(get_urlconf()), 404, exc)


class ErrorPagesMiddleware:
    """With DEBUG on, a 404 of a console page is the console's 404 page, not Django's technical one.

    Goes after the authentication and language middleware, so that the page is in the reader's language and
    layout. With DEBUG off Django already uses the console's handlers, so this does nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.DEBUG and not request.path.startswith(API_PREFIX):
            try:
                resolve(request.path_info, getattr(request, "urlconf", None))
            except Resolver404 as exc:
                return _not_found(request, exc)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if settings.DEBUG and isinstance(exception, Http404) and not request.path.startswith(API_PREFIX):
            return _not_found(request, exception)
        return None  # 403 always goes to the console's handler; everything else as Django does


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
