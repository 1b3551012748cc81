"""One transport per channel: it delivers one outbox message or raises PermanentError / TransientError."""

from __future__ import annotations

import http.client
import smtplib
import socket
import time
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from . import conf
from .errors import PermanentError, TransientError
from .models import Channel, Notification, OutboxMessage, WebhookEndpoint
from .services import sms_number_refusal
from .sms import get_sms_backend
from .webhooks import WebhookUrlError, webhook_attempt_record, webhook_sign, webhook_url_check


class Transport:
    channel = ""
    # Sending the same message (same key) twice delivers it once: safe to retry after a crash mid-send.
    idempotent = False

    def send(self, message: OutboxMessage) -> str:
        """Deliver; return the provider's id of the message (or "")."""
        raise NotImplementedError

    def close(self) -> None:
        """Called after a batch of messages: release connections kept open between them."""


class InAppTransport(Transport):
    channel = Channel.IN_APP
    idempotent = True  # one notification per outbox row (a unique key)

    def send(self, message: OutboxMessage) -> str:
        level = "info"
        from .events import EVENTS

        if message.event in EVENTS:
            level = EVENTS[message.event].level
        notification, _created = Notification.objects.get_or_create(
            outbox=message,
            defaults={
                "user_id": message.user_id,
                "event": message.event,
                "event_key": message.event_key,
                "level": level,
                "title": message.title,
                "body": message.body,
                "url": message.url,
                "created_at": message.created_at,
            },
        )
        return f"notification-{notification.pk}"


class EmailTransport(Transport):
    channel = Channel.EMAIL

    def __init__(self):
        self.connection = None  # one SMTP connection for the messages of a batch

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # closing a broken connection: nothing left to do
                pass
            self.connection = None

    def send(self, message: OutboxMessage) -> str:
        try:
            return self._send(message)
        except Exception:
            self.close()  # the next message starts on a fresh connection
            raise

    def _send(self, message: OutboxMessage) -> str:
        if not message.recipient:
            raise PermanentError("no email address")
        domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "localhost"
        email = EmailMultiAlternatives(
            subject=message.title,
            body=message.body,
            to=[message.recipient],
            # The same Message-ID on a resend lets mail clients drop a duplicate.
            headers={"Message-ID": f"<{message.key}@{domain}>", "X-Console-Event": message.event},
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        try:
            if self.connection is None:
                self.connection = get_connection(fail_silently=False, timeout=settings.NOTIFICATIONS_HTTP_TIMEOUT)
                self.connection.open()  # opened here, it stays open until close()
            email.connection = self.connection
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _text in exc.recipients.values()]
            if codes and all(400 <= c < 500 for c in codes):
                raise TransientError(f"recipient refused for now: {exc.recipients}") from exc
            raise PermanentError(f"recipient refused: {exc.recipients}") from exc
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TransientError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
            raise PermanentError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        except OSError as exc:  # smtplib's errors, refused connections, timeouts
            raise TransientError(f"SMTP: {exc}") from exc
        return message.key


class SmsTransport(Transport):
    channel = Channel.SMS

    @property
    def idempotent(self) -> bool:  # type: ignore[override]
        return get_sms_backend().idempotent

    def send(self, message: OutboxMessage) -> str:
        user = message.user
        if user.phone != message.recipient or not user.phone_verified_at:
            raise PermanentError("the number is no longer the user's verified phone")
        refusal = sms_number_refusal(message)
        if refusal:
            raise PermanentError(refusal)
        return get_sms_backend().send(
            to=message.recipient, body=message.body, params=message.params, key=message.key, user=user
        )


class WebhookTransport(Transport):
    """POST the signed payload to the endpoint (Standard Webhooks); every try is logged on the endpoint's page.

    Retried by the outbox on anything but a 2xx answer. Receivers deduplicate by ``webhook-id`` (the message's
    key, the same on every try), so a message whose worker died mid-send may be sent again."""

    channel = Channel.WEBHOOK
    idempotent = True

    def send(self, message: OutboxMessage) -> str:
        endpoint = WebhookEndpoint.objects.filter(pk=message.webhook_id).first()
        if endpoint is None:
            raise PermanentError("the endpoint was deleted")
        if not endpoint.enabled:
            raise PermanentError("the endpoint is disabled")
        clock = time.monotonic()
        status, error = None, ""
        try:
            status = self._post(message, endpoint)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
                raise TransientError(error)
            return message.key
        except WebhookUrlError as exc:
            error = str(exc)
            raise PermanentError(error) from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, TLS, a garbled answer
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise TransientError(error) from exc
        except Exception as exc:
            error = error or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            webhook_attempt_record(
                message=message, status_code=status, duration_ms=int((time.monotonic() - clock) * 1000), error=error
            )

    def _post(self, message: OutboxMessage, endpoint) -> int:
        # Checked again now (the name may resolve elsewhere than at creation) and connected to that address.
        address = webhook_url_check(endpoint.url)[0]
        parts = urlsplit(endpoint.url)
        timeout = conf.webhooks_timeout()
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout)
        else:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        # The Host header and TLS's server name stay the URL's; the socket goes to the address just checked.
        connection._create_connection = lambda addr, *args, **kwargs: socket.create_connection(
            (address, addr[1]), *args, **kwargs
        )
        timestamp = int(time.time())
        body = message.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "fine-tuning-console-webhooks/1",
            "webhook-id": message.key,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhook_sign(
                secret=endpoint.secret, msg_id=message.key, timestamp=timestamp, body=message.body
            ),
        }
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(65536)  # the answer's body is not kept; redirects are not followed
            return response.status
        finally:
            connection.close()


TRANSPORTS: dict[str, type[Transport]] = {
    t.channel: t for t in (InAppTransport, EmailTransport, SmsTransport, WebhookTransport)
}


def get_transport(channel: str) -> Transport:
    return TRANSPORTS[channel]()
