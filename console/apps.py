from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = _("Console")

    def ready(self) -> None:
        # Once a process, at start: take other users' access off what an older version left readable.
        from .filemodes import var_modes_check

        var_modes_check()
