"""Webhook endpoints: list, create (the secret shown once), detail with the attempts log, test event, delete."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from common.pagination import paginate

from . import conf
from .forms import WebhookEndpointForm
from .models import WebhookEndpoint
from .webhooks import (
    WEBHOOK_EVENTS,
    WebhookUrlError,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_enable,
    webhook_send_test,
)

_SECRET_KEY = "webhook_secret"  # the session's one-time copy of a new endpoint's secret


def _get_endpoint_for_user(request: HttpRequest, public_id: str) -> WebhookEndpoint:
    return get_object_or_404(WebhookEndpoint, public_id=public_id, user=request.user)


@login_required
def webhooks(request: HttpRequest) -> HttpResponse:
    endpoints = WebhookEndpoint.objects.filter(user=request.user)
    page = paginate(request, endpoints)
    return render(request, "notifications/webhooks.html", {"page": page, "events": WEBHOOK_EVENTS})


@login_required
def webhook_create(request: HttpRequest) -> HttpResponse:
    form = WebhookEndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint, secret = webhook_endpoint_create(
                user=request.user,
                url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
                description=form.cleaned_data["description"],
            )
        except WebhookUrlError as exc:
            form.add_error("url", str(exc))
        else:
            request.session[_SECRET_KEY] = {"endpoint": endpoint.public_id, "secret": secret}
            return redirect("notifications:webhook", endpoint.public_id)
    return render(
        request, "notifications/webhook_form.html", {"form": form, "allow_private": conf.webhooks_allow_private()}
    )


@login_required
def webhook(request: HttpRequest, public_id: str) -> HttpResponse:
    endpoint = _get_endpoint_for_user(request, public_id)
    attempts = endpoint.attempts.only(
        "id", "webhook_id", "event_type", "attempt", "created_at", "status_code", "duration_ms", "ok", "error"
    )
    page = paginate(request, attempts)
    context = {
        "endpoint": endpoint,
        "page": page,
        "events": [WEBHOOK_EVENTS[e] for e in endpoint.events if e in WEBHOOK_EVENTS],
    }
    if request.htmx:
        return render(request, "notifications/webhook.html#attempts", context)
    shown = request.session.pop(_SECRET_KEY, None)
    if shown and shown.get("endpoint") == endpoint.public_id:
        context["created_secret"] = shown["secret"]
    return render(request, "notifications/webhook.html", context)


@require_POST
@login_required
def webhook_test(request: HttpRequest, public_id: str) -> HttpResponse:
    endpoint = _get_endpoint_for_user(request, public_id)
    if not endpoint.enabled:
        messages.error(request, _("The endpoint is disabled: enable it before sending a test event."))
    else:
        webhook_send_test(endpoint=endpoint)
        messages.success(request, _("A test event was queued; its delivery appears below."))
    return redirect("notifications:webhook", endpoint.public_id)


@require_POST
@login_required
def webhook_enable(request: HttpRequest, public_id: str) -> HttpResponse:
    endpoint = _get_endpoint_for_user(request, public_id)
    webhook_endpoint_enable(endpoint=endpoint)
    messages.success(request, _("The endpoint is enabled: new events go to it again."))
    return redirect("notifications:webhook", endpoint.public_id)


@login_required
def webhook_delete(request: HttpRequest, public_id: str) -> HttpResponse:
    endpoint = _get_endpoint_for_user(request, public_id)
    if request.method == "POST":
        webhook_endpoint_delete(endpoint=endpoint)
        messages.success(request, _("The endpoint %(url)s was deleted.") % {"url": endpoint.url})
        return redirect("notifications:webhooks")
    return render(request, "notifications/webhook_delete.html", {"endpoint": endpoint})
