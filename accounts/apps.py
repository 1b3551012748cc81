from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AccountsConfig(AppConfig):
    """The accounts app: users and API keys. Its label stays "console" (the app it came out of), so that
    AUTH_USER_MODEL = "console.User", the console_user/console_apikey tables and the migration history are
    unchanged (docs/decisions/console-split.md)."""

    name = "accounts"
    label = "console"
    verbose_name = _("Console")

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from accounts import services
        from accounts.models import ApiKey, User
        from console.shell import register_nav_item, register_user_menu_link

        # A revocation reaches the chat path's key cache at once, however the row changed (accounts/services.py).
        post_save.connect(services.key_saved, sender=ApiKey, dispatch_uid="apikey-cache-saved")
        post_delete.connect(services.key_deleted, sender=ApiKey, dispatch_uid="apikey-cache-deleted")
        post_save.connect(services.user_saved, sender=User, dispatch_uid="apikey-cache-user")

        register_nav_item("api_keys", 90, "console:api_keys", _("API keys"), "◈")
        register_user_menu_link("account", 10, "console:account", _("Account"))
        register_user_menu_link("api_keys", 20, "console:api_keys", _("API keys"))
