"""The notifications app's settings as it uses them. Each is read from the environment once, with its one
default, in console/settings.py; these functions only name and shape them."""

from __future__ import annotations

from django.conf import settings


def base_url() -> str:
    """Where links in messages point: the console as its users reach it."""
    return str(settings.CONSOLE_BASE_URL).rstrip("/")


def queue() -> str:
    """The Celery queue that sends notifications."""
    return str(settings.NOTIFICATIONS_QUEUE)


def max_attempts() -> int:
    """Tries of a message with transient errors before it is marked failed."""
    return int(settings.NOTIFICATIONS_MAX_ATTEMPTS)


def retry_base() -> float:
    """Seconds before the first retry; each next one waits twice as long (capped at an hour)."""
    return float(settings.NOTIFICATIONS_RETRY_BASE)


def pending_grace() -> float:
    """A pending message this many seconds past due was lost by the broker: the repair queues it again."""
    return float(settings.NOTIFICATIONS_PENDING_GRACE)


def sending_timeout() -> float:
    """A message claimed this long ago whose worker never finished is taken to be abandoned."""
    return float(settings.NOTIFICATIONS_SENDING_TIMEOUT)


def stuck_after() -> float:
    """/healthz counts messages pending or sending for longer than this."""
    return float(settings.NOTIFICATIONS_STUCK_AFTER)


def phone_codes_per_user_per_hour() -> int:
    """Phone codes one user may ask for in an hour, to any numbers (0: no limit)."""
    return int(settings.PHONE_CODES_PER_USER_PER_HOUR)


def phone_codes_per_number_per_hour() -> int:
    """Phone codes one user may have sent to one number in an hour (other users' codes to it do not count; 0: no
    limit)."""
    return int(settings.PHONE_CODES_PER_NUMBER_PER_HOUR)


def sms_per_number_per_hour() -> int:
    """Texts one number may receive in an hour from all accounts together, notifications and codes (0: no cap)."""
    return int(settings.SMS_PER_NUMBER_PER_HOUR)


def badge_poll_seconds() -> int:
    return int(settings.NOTIFICATIONS_BADGE_POLL_SECONDS)


def claim_pause() -> float:
    """Fault injection for the tests only: sleep between claiming a message and sending it."""
    return float(settings.NOTIFICATIONS_CLAIM_PAUSE)


def webhooks_allow_private() -> bool:
    """Operators only: let webhook endpoints resolve to loopback, private or link-local addresses."""
    return bool(settings.WEBHOOKS_ALLOW_PRIVATE)


def webhooks_disable_after() -> int:
    """Failed deliveries in a row after which an endpoint is disabled and its owner told (0: never)."""
    return int(settings.WEBHOOKS_DISABLE_AFTER)


def webhooks_timeout() -> float:
    """Seconds an endpoint may take to answer one delivery."""
    return float(settings.WEBHOOKS_TIMEOUT)
