from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from console.health import register_report

        register_report("notifications", _health_report)


def _health_report() -> dict:
    """For /healthz: messages pending or sending for more than 10 minutes (beat's repair sends them again)."""
    from .services import outbox_stuck_count

    return {"stuck_over_10_minutes": outbox_stuck_count()}
