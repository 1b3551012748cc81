from __future__ import annotations

from django.conf import settings

from . import shell


def console(request) -> dict:
    context = {"product_name": settings.CONSOLE_PRODUCT_NAME}
    if getattr(request, "user", None) is not None and request.user.is_authenticated:
        # The shell's slots, filled by the apps (console/shell.py).
        context["navigation"] = shell.navigation(request)
        context["user_menu"] = shell.user_menu(request)
        context["topbar"] = shell.topbar(request)
    return context
