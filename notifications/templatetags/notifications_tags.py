"""Pieces other apps' templates include by name: the top bar's badge, the account page's phone binding."""

from __future__ import annotations

from django import template
from django.conf import settings

from .. import conf
from ..models import Notification, PhoneVerification, SentSms

register = template.Library()


@register.inclusion_tag("notifications/_badge.html", takes_context=True)
def notification_badge(context) -> dict:
    user = context["request"].user
    return {
        "unread_count": Notification.objects.for_user(user).unread().count(),
        "poll_seconds": conf.badge_poll_seconds(),
    }


@register.inclusion_tag("notifications/_phone.html", takes_context=True)
def phone_binding(context) -> dict:
    from django.utils import timezone

    request = context["request"]
    user = request.user
    pending = (
        PhoneVerification.objects.filter(user=user, verified_at__isnull=True, expires_at__gt=timezone.now())
        .order_by("-id")
        .first()
    )
    dev_sms = []
    if settings.SMS_BACKEND == "development":
        dev_sms = list(SentSms.objects.filter(user=user)[:5])
    return {
        "user": user,
        "pending": pending,
        "dev_sms": dev_sms,
        "csrf_token": context.get("csrf_token"),
        "request": request,
    }
