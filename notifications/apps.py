from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from console.health import register_report

        from . import checks  # noqa: F401 - registers the configuration checks

        register_report("notifications", _health_report)

        from django.utils.translation import gettext_lazy as _

        from console.shell import register_account_section, register_nav_item, register_topbar, register_user_menu_link

        register_nav_item("notifications", 80, "notifications:centre", _("Notifications"), "✉")
        register_user_menu_link("webhooks", 30, "notifications:webhooks", _("Webhooks"))
        register_topbar("notifications", 10, _badge)
        register_account_section("phone", 10, _phone_binding)


def _badge(request) -> str:
    from django.template.loader import render_to_string

    from .templatetags.notifications_tags import notification_badge

    # Without request=: the context processors that call this would run again.
    return render_to_string("notifications/_badge.html", notification_badge({"request": request}))


def _phone_binding(request) -> str:
    from django.middleware.csrf import get_token
    from django.template.loader import render_to_string

    from .templatetags.notifications_tags import phone_binding

    context = phone_binding({"request": request, "csrf_token": get_token(request)})
    return render_to_string("notifications/_phone.html", context)


def _health_report() -> dict:
    """For /healthz: messages pending or sending for more than 10 minutes (beat's repair sends them again)."""
    from .services import outbox_stuck_count

    return {"stuck_over_10_minutes": outbox_stuck_count()}
