from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsoleConfig(AppConfig):
    name = "console"
    label = "console_shell"  # "console" is the accounts app's label
    verbose_name = _("Console")

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the configuration checks

        # Once a process, at start: take other users' access off what an older version left readable.
        from .filemodes import var_modes_check

        var_modes_check()

        from .shell import register_nav_item

        register_nav_item("overview", 10, "console:overview", _("Overview"), "◧")
