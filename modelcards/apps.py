from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ModelcardsConfig(AppConfig):
    name = "modelcards"
    verbose_name = _("Model cards")

    def ready(self) -> None:
        from console.dashboard import register_panel

        from .panels import overview_panel

        register_panel("modelcards", 30, "modelcards/_overview.html", overview_panel)

        from console.shell import register_nav_item

        register_nav_item("modelcards", 40, "modelcards:square", _("Model square"), "▦")
