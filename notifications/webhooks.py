"""Webhooks: endpoints a user registers, the events they receive, signed as Standard Webhooks says.

A webhook is one more channel of the outbox: ``notify`` writes one row per endpoint that asked for the
event (its body is the JSON payload, its key the ``webhook-id``), and the outbox sends it with the same
claim, retries and back-off as email and SMS (``transports.WebhookTransport``). Each try is recorded as a
``WebhookAttempt``; an endpoint that fails ``WEBHOOKS_DISABLE_AFTER`` times in a row is disabled and its
owner told. Notifications import no app above them: ``jobs`` and ``deployments`` register how their objects
look in a payload (``register_webhook_data``) from their ``AppConfig.ready()``, with the API's own serializers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from . import conf
from .models import Channel, OutboxMessage, WebhookAttempt, WebhookEndpoint

logger = logging.getLogger(__name__)

__all__ = [
    "WEBHOOK_EVENTS",
    "TEST_EVENT",
    "WebhookUrlError",
    "register_webhook_data",
    "register_webhook_event",
    "webhook_secret_new",
    "webhook_sign",
    "webhook_url_check",
    "webhook_endpoint_create",
    "webhook_endpoint_delete",
    "webhook_endpoint_enable",
    "webhook_send_test",
    "webhook_messages",
    "webhook_attempt_record",
]


@dataclass(frozen=True)
class WebhookEvent:
    type: str  # what the payload's "type" says
    notification: str  # the notification event it follows (notifications/events.py has the mechanism)
    kind: str  # the object in "data", as registered by the app that owns it
    label: object


# The events endpoints may subscribe to: those the code emits, each following a notification event. The apps that
# own them register them from their AppConfig.ready() (their notification_events.py), in the order forms list them.
WEBHOOK_EVENTS: dict[str, WebhookEvent] = {}
_BY_NOTIFICATION: dict[str, WebhookEvent] = {}


def register_webhook_event(type: str, notification: str, kind: str, label) -> None:
    """A payload ``type`` sent when the notification event ``notification`` is, with the ``kind`` of object that
    ``register_webhook_data`` builds."""
    event = WebhookEvent(type, notification, kind, label)
    WEBHOOK_EVENTS[type] = event
    _BY_NOTIFICATION[notification] = event


TEST_EVENT = "webhook.test"

# kind → builder(subject_code) → the object as the API shows it.
_DATA: dict[str, Callable[[str], dict]] = {}


def register_webhook_data(kind: str, builder: Callable[[str], dict]) -> None:
    """An app above says how its object (found by the code given to ``notify``) looks in a payload's ``data``."""
    _DATA[kind] = builder


def _data(kind: str, code: str) -> dict:
    builder = _DATA.get(kind)
    if builder is not None:
        try:
            return builder(code)
        except Exception:  # a payload never stops the change that caused it
            logger.exception("webhook data for %s %s", kind, code)
    return {"id": code, "object": kind}


# --- the signature -----------------------------------------------------------


def webhook_secret_new() -> str:
    """A signing secret in Standard Webhooks' form: ``whsec_`` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_sign(*, secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: ``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# --- where an endpoint may point ----------------------------------------------


class WebhookUrlError(ValueError):
    """The URL cannot be an endpoint; the message says why, in the reader's language."""


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return not address.is_global or address.is_multicast


def webhook_url_check(url: str) -> list[str]:
    """The addresses ``url``'s host resolves to, all public (unless the operator allows private ones).

    Called when an endpoint is made and again before every delivery, so a name that resolves to an inside
    address later (DNS rebinding) is refused then; the delivery connects to the address checked here."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlError(_("The URL must start with https:// or http://."))
    if parts.username or parts.password:
        raise WebhookUrlError(_("The URL must not contain a user name or password."))
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookUrlError(_("The port in the URL is not a number from 1 to 65535.")) from None
    if not host:
        raise WebhookUrlError(_("The URL has no host name."))
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookUrlError(_("The host %(host)s cannot be found.") % {"host": host}) from None
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    if not conf.webhooks_allow_private():
        for address in addresses:
            if _forbidden(ipaddress.ip_address(address.split("%")[0])):
                raise WebhookUrlError(
                    _(
                        "%(host)s resolves to %(address)s, a loopback, private or link-local address; "
                        "webhooks go to public addresses only."
                    )
                    % {"host": host, "address": address}
                )
    return addresses


# --- endpoints ----------------------------------------------------------------


def webhook_endpoint_create(*, user, url: str, events: list[str], description: str = "") -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its signing secret (shown to the user once)."""
    url = url.strip()
    unknown = set(events) - set(WEBHOOK_EVENTS)
    if unknown or not events:
        raise WebhookUrlError(_("Choose at least one event."))
    webhook_url_check(url)
    secret = webhook_secret_new()
    endpoint = WebhookEndpoint.objects.create(
        user=user,
        url=url,
        events=[e for e in WEBHOOK_EVENTS if e in events],
        description=description.strip(),
        secret=secret,
    )
    return endpoint, secret


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint with its attempts log; its messages still waiting go with it."""
    endpoint.delete()


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint) -> None:
    """Turn a disabled endpoint on again, its count of failures back to zero."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=True, consecutive_failures=0, disabled_at=None, disabled_reason=""
    )
    endpoint.refresh_from_db()


def _payload(event_type: str, data: dict) -> str:
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return json.dumps({"type": event_type, "timestamp": now, "data": data}, separators=(",", ":"), ensure_ascii=False)


def _message(endpoint: WebhookEndpoint, event_type: str, body: str, event_key: str, **fields) -> OutboxMessage:
    return OutboxMessage(
        user_id=endpoint.user_id,
        event=event_type,
        channel=Channel.WEBHOOK,
        webhook=endpoint,
        recipient=endpoint.url[:254],
        key=f"msg_{secrets.token_urlsafe(18)}",  # the webhook-id, the same on every retry
        event_key=event_key,
        title=event_type,
        body=body,
        **fields,
    )


def webhook_messages(*, user, event: str, code: str, event_key: str, **fields) -> list[OutboxMessage]:
    """Unsaved outbox rows for the user's enabled endpoints that asked for this notification event."""
    spec = _BY_NOTIFICATION.get(event)
    if spec is None:
        return []
    endpoints = [e for e in WebhookEndpoint.objects.filter(user=user, enabled=True) if spec.type in e.events]
    if not endpoints:
        return []
    body = _payload(spec.type, _data(spec.kind, code))
    return [_message(endpoint, spec.type, body, event_key, **fields) for endpoint in endpoints]


def webhook_send_test(*, endpoint: WebhookEndpoint) -> OutboxMessage:
    """Queue a ``webhook.test`` event to this endpoint, through the outbox like any other."""
    from .services import enqueue

    body = _payload(
        TEST_EVENT,
        {"object": "webhook.test", "endpoint": endpoint.public_id, "message": "A test event sent from the console."},
    )
    message = _message(endpoint, TEST_EVENT, body, secrets.token_urlsafe(6), subject_code=endpoint.public_id)
    message.save()
    transaction.on_commit(lambda: enqueue([message.pk]))
    return message


# --- attempts -----------------------------------------------------------------


def webhook_attempt_record(
    *, message: OutboxMessage, status_code: int | None, duration_ms: int, error: str = ""
) -> WebhookAttempt | None:
    """Log one try; count failures in a row, and past the limit disable the endpoint and tell its owner."""
    from .services import notify

    ok = not error
    with transaction.atomic():
        if not WebhookEndpoint.objects.filter(pk=message.webhook_id).exists():
            return None  # deleted while this try was under way (its messages went with it)
        attempt = WebhookAttempt.objects.create(
            endpoint_id=message.webhook_id,
            message=message,
            webhook_id=message.key,
            event_type=message.event,
            attempt=message.attempts or 1,
            status_code=status_code,
            duration_ms=duration_ms,
            ok=ok,
            error=error[:500],
        )
        endpoints = WebhookEndpoint.objects.filter(pk=message.webhook_id)
        if ok:
            endpoints.update(consecutive_failures=0)
            return attempt
        endpoints.update(consecutive_failures=F("consecutive_failures") + 1)
        limit = conf.webhooks_disable_after()
        endpoint = endpoints.select_related("user").first()
        if not (limit and endpoint and endpoint.enabled and endpoint.consecutive_failures >= limit):
            return attempt
        reason = f"{endpoint.consecutive_failures} failed deliveries in a row; the last: {error}"[:300]
        if endpoints.filter(enabled=True).update(enabled=False, disabled_at=timezone.now(), disabled_reason=reason):
            notify(
                user=endpoint.user,
                event="webhook.disabled",
                subject_name=endpoint.url,
                subject_code=endpoint.public_id,
                url=reverse("notifications:webhook", args=[endpoint.public_id]),
                context={"failures": endpoint.consecutive_failures, "error": error[:200]},
            )
    return attempt
