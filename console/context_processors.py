from __future__ import annotations

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

# (url name, label, icon). Entries whose URL does not exist yet are not shown.
NAVIGATION = [
    ("console:overview", _("Overview"), "◧"),
    ("datasets:list", _("Datasets"), "▤"),
    ("jobs:list", _("Fine-tuning tasks"), "⟳"),
    ("modelcards:square", _("Model square"), "▦"),
    ("playground:index", _("Experience center"), "▷"),
    ("deployments:list", _("Private instances"), "▣"),
    ("usage:index", _("Usage"), "◔"),
    ("notifications:centre", _("Notifications"), "✉"),
    ("console:api_keys", _("API keys"), "◈"),
]


def _navigation(request) -> list[dict]:
    items = []
    for name, label, icon in NAVIGATION:
        try:
            url = reverse(name)
        except NoReverseMatch:
            continue
        active = request.path == url if name == "console:overview" else request.path.startswith(url)
        items.append({"url": url, "label": label, "icon": icon, "active": active})
    return items


def console(request) -> dict:
    context = {"product_name": settings.CONSOLE_PRODUCT_NAME}
    if getattr(request, "user", None) is not None and request.user.is_authenticated:
        context["navigation"] = _navigation(request)
    return context
