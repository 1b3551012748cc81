"""Live parts of pages: a fragment that HTMX polls (``hx-trigger="every 2s"``) until what it shows reaches a final
state. The view answers with ``polled``: the fragment as it is while something can still change, and the same
fragment with HTMX's status 286 once nothing can, which stops the polling."""

from __future__ import annotations

from django.http import HttpResponse
from django_htmx.http import HttpResponseStopPolling


def polled(fragment: HttpResponse | str, *, settled: bool) -> HttpResponse:
    """``fragment`` (a rendered response or its HTML) for a polling request; ``settled`` stops the polling."""
    if isinstance(fragment, HttpResponse):
        return HttpResponseStopPolling(fragment.content) if settled else fragment
    return HttpResponseStopPolling(fragment) if settled else HttpResponse(fragment)
