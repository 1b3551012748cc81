"""One transport per channel: it delivers one outbox message or raises PermanentError / TransientError."""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from .errors import PermanentError, TransientError
from .models import Channel, Notification, OutboxMessage
from .sms import get_sms_backend


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
        return get_sms_backend().send(
            to=message.recipient, body=message.body, params=message.params, key=message.key, user=user
        )


TRANSPORTS: dict[str, type[Transport]] = {t.channel: t for t in (InAppTransport, EmailTransport, SmsTransport)}


def get_transport(channel: str) -> Transport:
    return TRANSPORTS[channel]()
