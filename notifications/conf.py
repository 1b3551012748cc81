"""The notifications app's settings with their defaults (console/settings.py reads them from the environment)."""

from __future__ import annotations

import os

from django.conf import settings


def base_url() -> str:
    """Where links in messages point: the console as its users reach it."""
    return str(getattr(settings, "CONSOLE_BASE_URL", "http://127.0.0.1:8000")).rstrip("/")


def queue() -> str:
    """The Celery queue that sends notifications."""
    return str(getattr(settings, "NOTIFICATIONS_QUEUE", "default"))


def max_attempts() -> int:
    """Tries of a message with transient errors before it is marked failed."""
    return int(getattr(settings, "NOTIFICATIONS_MAX_ATTEMPTS", 6))


def retry_base() -> float:
    """Seconds before the first retry; each next one waits twice as long (capped at an hour)."""
    return float(getattr(settings, "NOTIFICATIONS_RETRY_BASE", 30))


def pending_grace() -> float:
    """A pending message this many seconds past due was lost by the broker: the repair queues it again."""
    return float(getattr(settings, "NOTIFICATIONS_PENDING_GRACE", 120))


def sending_timeout() -> float:
    """A message claimed this long ago whose worker never finished is taken to be abandoned."""
    return float(getattr(settings, "NOTIFICATIONS_SENDING_TIMEOUT", 300))


def stuck_after() -> float:
    """/healthz counts messages pending or sending for longer than this."""
    return float(getattr(settings, "NOTIFICATIONS_STUCK_AFTER", 600))


def phone_codes_per_user_per_hour() -> int:
    """Phone codes one user may ask for in an hour, to any numbers."""
    return int(getattr(settings, "PHONE_CODES_PER_USER_PER_HOUR", 5))


def phone_codes_per_number_per_hour() -> int:
    """Phone codes one user may have sent to one number in an hour (other users' codes to it do not count)."""
    return int(getattr(settings, "PHONE_CODES_PER_NUMBER_PER_HOUR", 3))


def badge_poll_seconds() -> int:
    return int(getattr(settings, "NOTIFICATIONS_BADGE_POLL_SECONDS", 15))


def claim_pause() -> float:
    """Fault injection for the tests only: sleep between claiming a message and sending it."""
    return float(os.environ.get("NOTIFICATIONS_CLAIM_PAUSE") or 0)


def webhooks_allow_private() -> bool:
    """Operators only: let webhook endpoints resolve to loopback, private or link-local addresses."""
    return bool(getattr(settings, "WEBHOOKS_ALLOW_PRIVATE", False))


def webhooks_disable_after() -> int:
    """Failed deliveries in a row after which an endpoint is disabled and its owner told (0: never)."""
    return int(getattr(settings, "WEBHOOKS_DISABLE_AFTER", 20))


def webhooks_timeout() -> float:
    """Seconds an endpoint may take to answer one delivery."""
    return float(getattr(settings, "WEBHOOKS_TIMEOUT", 10))
