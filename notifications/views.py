"""The notification centre, the top bar's badge, preferences, short links and phone binding."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from common.pagination import paginate
from common.phone import normalize_phone

from . import conf, services
from .events import EVENTS
from .models import USER_CHANNELS, Channel, Notification, OutboxMessage


def _get_notification_for_user(request: HttpRequest, pk: int) -> Notification:
    return get_object_or_404(Notification, pk=pk, user=request.user)


@login_required
def centre(request: HttpRequest) -> HttpResponse:
    show = "unread" if request.GET.get("show") == "unread" else "all"
    notifications = Notification.objects.for_user(request.user).only(
        "id", "event", "event_key", "level", "title", "body", "url", "created_at", "read_at"
    )
    if show == "unread":
        notifications = notifications.unread()
    page = paginate(request, notifications)
    unread = Notification.objects.for_user(request.user).unread().count()
    return render(request, "notifications/centre.html", {"page": page, "show": show, "unread_count": unread})


@never_cache
@require_GET
@login_required
def badge(request: HttpRequest) -> HttpResponse:
    """The top bar's unread count: a tiny partial that htmx polls."""
    unread = Notification.objects.for_user(request.user).unread().count()
    return render(
        request, "notifications/_badge.html", {"unread_count": unread, "poll_seconds": conf.badge_poll_seconds()}
    )


def _back(request: HttpRequest) -> HttpResponse:
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = ""
    return redirect(target or "notifications:centre")


@require_POST
@login_required
def mark_read(request: HttpRequest, pk: int) -> HttpResponse:
    services.notification_mark_read(notification=_get_notification_for_user(request, pk))
    return _back(request)


@require_POST
@login_required
def mark_all_read(request: HttpRequest) -> HttpResponse:
    count = services.notifications_mark_all_read(user=request.user)
    messages.success(
        request, ngettext("%(n)s notification marked read.", "%(n)s notifications marked read.", count) % {"n": count}
    )
    return _back(request)


@login_required
def open_link(request: HttpRequest, key: str) -> HttpResponse:
    """A message's short link (the SMS has room for little else): mark it read and go to its page."""
    notification = Notification.objects.filter(user=request.user, event_key=key).first()
    if notification is not None:
        services.notification_mark_read(notification=notification)
        url = notification.url
    else:
        message = OutboxMessage.objects.filter(user=request.user, event_key=key).only("url").first()
        if message is None:
            raise Http404
        url = message.url
    return redirect(url or "notifications:centre")


@login_required
def preferences(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        enabled = set()
        for value in request.POST.getlist("on"):
            event, _sep, channel = value.rpartition(":")
            if event in EVENTS and channel in (Channel.EMAIL, Channel.SMS):
                enabled.add((event, channel))
        services.preferences_save(user=request.user, enabled=enabled)
        messages.success(request, _("Your notification settings were saved."))
        return redirect("notifications:preferences")
    prefs = services.preferences_for(user=request.user)
    groups: dict = {}
    # Groups by their order; events in the order their apps registered them.
    for name, event in sorted(EVENTS.items(), key=lambda item: item[1].group.order):
        if not event.for_people:
            continue
        groups.setdefault(str(event.group), []).append(
            {
                "name": name,
                "label": event.label,
                "channels": [
                    {"channel": c, "on": prefs[(name, c)], "value": f"{name}:{c}", "locked": c == Channel.IN_APP}
                    for c in USER_CHANNELS
                ],
            }
        )
    context = {
        "groups": groups,
        "channels": [(c.value, c.label) for c in USER_CHANNELS],
        "has_email": bool(request.user.email),
        "has_phone": bool(request.user.phone and request.user.phone_verified_at),
    }
    return render(request, "notifications/preferences.html", context)


@require_POST
@login_required
def phone_send(request: HttpRequest) -> HttpResponse:
    try:
        phone = normalize_phone(request.POST.get("phone", ""))
        if not phone:
            raise ValidationError(_("Enter a phone number."))
        services.phone_code_send(user=request.user, phone=phone)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except services.PhoneError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("A code was sent to %(phone)s. It is valid for 10 minutes.") % {"phone": phone})
    return redirect("console:account")


@require_POST
@login_required
def phone_verify(request: HttpRequest) -> HttpResponse:
    try:
        verification = services.phone_code_check(user=request.user, code=request.POST.get("code", ""))
    except services.PhoneError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, _("%(phone)s is verified: SMS notifications go to it.") % {"phone": verification.phone}
        )
    return redirect("console:account")
