"""Notifications: the outbox (one row per message and channel), in-app messages, preferences, phone codes."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Channel(models.TextChoices):
    IN_APP = "in_app", _("In-app")
    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")
    WEBHOOK = "webhook", _("Webhook")


# The channels a user picks per event on the preferences page; webhooks go to the endpoints a user registered.
USER_CHANNELS = (Channel.IN_APP, Channel.EMAIL, Channel.SMS)


class OutboxStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")


class OutboxMessage(models.Model):
    """One message to one user on one channel, written in the transaction of the change that caused it.

    A worker claims it with a conditional update (pending → sending), marks the moment it hands it to
    the transport (send_started_at), then records the outcome. ``key`` is the idempotency key given to
    the transport; ``event_key`` is shared by the messages of one event and makes its short link."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="outbox_messages")
    event = models.CharField(_("event"), max_length=64)
    channel = models.CharField(_("channel"), max_length=10, choices=Channel.choices)
    status = models.CharField(_("status"), max_length=10, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    key = models.CharField(max_length=40, unique=True, editable=False)
    event_key = models.CharField(max_length=16, db_index=True, editable=False)
    recipient = models.CharField(_("to"), max_length=254, blank=True)
    subject_name = models.CharField(max_length=200, blank=True)
    subject_code = models.CharField(max_length=128, blank=True)
    url = models.CharField(max_length=500, blank=True)
    title = models.CharField(_("title"), max_length=300)
    body = models.TextField(_("text"))
    html = models.TextField(blank=True)
    # Named values for providers that send templates (Alibaba Cloud SMS) instead of free text.
    params = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    provider_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=32, blank=True)  # the claim's token, one per batch a worker takes
    send_started_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # The endpoint a webhook message goes to (its body is the signed JSON payload, its key the webhook-id).
    webhook = models.ForeignKey(
        "WebhookEndpoint", on_delete=models.CASCADE, null=True, blank=True, related_name="messages"
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox")
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            # The texts a number received in the last hour (SMS_PER_NUMBER_PER_HOUR).
            models.Index(fields=["recipient", "send_started_at"], name="outbox_recipient_started"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.event} → {self.user_id}"


class NotificationQuerySet(models.QuerySet):
    def for_user(self, user) -> NotificationQuerySet:
        return self.filter(user=user)

    def unread(self) -> NotificationQuerySet:
        return self.filter(read_at__isnull=True)


class Notification(models.Model):
    """An in-app message: what the notification centre lists and the top bar counts."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    outbox = models.OneToOneField(
        OutboxMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="notification"
    )
    event = models.CharField(_("event"), max_length=64)
    event_key = models.CharField(max_length=16, db_index=True)
    level = models.CharField(max_length=10, default="info")
    title = models.CharField(_("title"), max_length=300)
    body = models.TextField(_("text"), blank=True)
    url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    read_at = models.DateTimeField(_("read"), null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        indexes = [
            models.Index(fields=["user", "-id"]),
            models.Index(fields=["user", "read_at"]),
        ]

    def __str__(self) -> str:
        return self.title


class Preference(models.Model):
    """A user's choice for one event on one channel; without a row the event's default applies."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    event = models.CharField(max_length=64)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "event", "channel"], name="preference_once")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.event} {self.channel}: {self.enabled}"


class PhoneVerification(models.Model):
    """A 6-digit code sent to a number; only its keyed hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="phone_verifications")
    phone = models.CharField(max_length=16, db_index=True)
    code_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("phone verification")
        verbose_name_plural = _("phone verifications")

    def __str__(self) -> str:
        return f"{self.user_id} {self.phone}"


class SentSms(models.Model):
    """What the development SMS backend would have sent (staff see it in the admin, users on their account)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="sent_sms"
    )
    to = models.CharField(_("to"), max_length=16)
    body = models.TextField(_("text"))
    encoding = models.CharField(max_length=8)
    segments = models.PositiveSmallIntegerField(default=1)
    key = models.CharField(max_length=48, unique=True)
    created_at = models.DateTimeField(_("sent at"), default=timezone.now)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("SMS (development backend)")
        verbose_name_plural = _("SMS (development backend)")

    def __str__(self) -> str:
        return f"{self.to}: {self.body[:40]}"


def new_webhook_id() -> str:
    return f"we_{secrets.token_hex(10)}"


class WebhookEndpoint(models.Model):
    """A URL a user registered to receive the events they chose, signed with its secret (Standard Webhooks)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    public_id = models.CharField(max_length=40, unique=True, default=new_webhook_id, editable=False)
    url = models.URLField(_("URL"), max_length=500)
    description = models.CharField(_("description"), max_length=200, blank=True)
    events = models.JSONField(_("events"), default=list)
    # ``whsec_`` and the base64 of the key: the receiver needs it whole to check signatures, so it is kept.
    secret = models.CharField(max_length=100, editable=False)
    enabled = models.BooleanField(_("enabled"), default=True)
    consecutive_failures = models.PositiveIntegerField(_("failures in a row"), default=0)
    disabled_at = models.DateTimeField(_("disabled at"), null=True, blank=True)
    disabled_reason = models.CharField(_("why disabled"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")

    def __str__(self) -> str:
        return self.url


class WebhookAttempt(models.Model):
    """One try to deliver one webhook message: what the endpoint answered and how long it took."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="attempts")
    message = models.ForeignKey(
        OutboxMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="webhook_attempts"
    )
    webhook_id = models.CharField(_("webhook-id"), max_length=64)
    event_type = models.CharField(_("event"), max_length=64)
    attempt = models.PositiveSmallIntegerField(_("attempt"), default=1)
    created_at = models.DateTimeField(_("time"), default=timezone.now)
    status_code = models.PositiveSmallIntegerField(_("status"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(_("response time (ms)"), null=True, blank=True)
    ok = models.BooleanField(default=False)
    error = models.CharField(_("error"), max_length=500, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("webhook attempt")
        verbose_name_plural = _("webhook attempts")
        indexes = [models.Index(fields=["endpoint", "-id"])]

    def __str__(self) -> str:
        return f"{self.event_type} → {self.endpoint_id}: {self.status_code or self.error[:40]}"
