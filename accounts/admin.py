from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts import services
from accounts.models import ApiKey, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "email", "phone", "language", "is_staff", "is_active", "last_login", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active", "language"]
    search_fields = ["username", "email", "phone", "first_name", "last_name"]
    fieldsets = DjangoUserAdmin.fieldsets + (
        (_("Console"), {"fields": ("phone", "phone_verified_at", "language")}),
        (_("Limits"), {"fields": ("max_running_jobs", "max_datasets", "max_deployments")}),
    )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["name", "key_id", "user__username", "user__email"]
    readonly_fields = ["key_id", "created_at", "last_used_at"]
    fields = ["user", "name", "key_id", "created_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        # A key's secret is shown once, on the API keys page; the admin only revokes.
        return False

    @admin.action(description=_("Revoke the selected keys"))
    def revoke(self, request, queryset):
        count = services.api_keys_revoke(queryset)
        self.message_user(
            request, ngettext("%(count)d key revoked.", "%(count)d keys revoked.", count) % {"count": count}
        )
