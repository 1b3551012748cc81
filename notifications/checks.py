"""System checks of the notification settings (console/settings.py; console/checks.py has the mechanism)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from console.checks import range_errors

RANGES = [
    ("NOTIFICATIONS_HTTP_TIMEOUT", 0.001, "seconds a provider may take to answer"),
    ("NOTIFICATIONS_MAX_ATTEMPTS", 1, "tries of a message"),
    ("NOTIFICATIONS_RETRY_BASE", 0, "seconds before a message's first retry"),
    ("NOTIFICATIONS_PENDING_GRACE", 0.001, "seconds past due after which a pending message is queued again"),
    ("NOTIFICATIONS_SENDING_TIMEOUT", 0.001, "seconds after which a claimed message is abandoned"),
    ("NOTIFICATIONS_STUCK_AFTER", 0.001, "seconds after which /healthz counts a message as stuck"),
    ("NOTIFICATIONS_BADGE_POLL_SECONDS", 1, "seconds between the badge's refreshes"),
    ("NOTIFICATIONS_CLAIM_PAUSE", 0, "seconds of the tests' pause after a claim"),
    ("PHONE_CODES_PER_USER_PER_HOUR", 0, "phone codes a user may ask for in an hour (0: no limit)"),
    ("PHONE_CODES_PER_NUMBER_PER_HOUR", 0, "phone codes to one number in an hour (0: no limit)"),
    ("WEBHOOKS_DISABLE_AFTER", 0, "failed deliveries before an endpoint is disabled (0: never)"),
    ("WEBHOOKS_TIMEOUT", 0.001, "seconds an endpoint may take to answer"),
    ("SMS_PER_NUMBER_PER_HOUR", 0, "texts one number may receive in an hour (0: no cap)"),
]


@register("configuration")
def notifications_settings_check(app_configs=None, **kwargs) -> list[Error]:
    from django.utils.module_loading import import_string

    from .sms import BACKENDS

    errors = range_errors(RANGES, "notifications")
    name = settings.SMS_BACKEND
    try:
        import_string(BACKENDS.get(name, name))
    except ImportError:
        errors.append(
            Error(
                f"SMS_BACKEND is {name!r}: neither a backend's name nor an importable class.",
                hint=f"Set SMS_BACKEND to one of: {', '.join(BACKENDS)}, or to the dotted path of a backend class.",
                id="notifications.E101",
            )
        )
    return errors
