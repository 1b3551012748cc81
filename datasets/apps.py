from __future__ import annotations

from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "datasets"
    verbose_name = "Datasets"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the configuration checks
        from .notification_events import register_events

        register_events()
        from console.dashboard import register_panel

        register_panel("datasets", 10, "datasets/_overview.html", _overview_panel)

        from django.utils.translation import gettext_lazy as _

        from console.shell import register_nav_item

        register_nav_item("datasets", 20, "datasets:list", _("Datasets"), "▤")


def _overview_panel(request) -> dict:
    from django.db.models import Count, Q

    from .models import Dataset, Status

    return Dataset.objects.filter(owner=request.user).aggregate(
        total=Count("id"),
        ready=Count("id", filter=Q(status=Status.READY)),
        invalid=Count("id", filter=Q(status=Status.INVALID)),
    )
