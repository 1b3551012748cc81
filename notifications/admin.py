from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import services
from .models import Notification, OutboxMessage, PhoneVerification, Preference, SentSms


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "created_at",
        "user",
        "event",
        "channel",
        "recipient",
        "status",
        "attempts",
        "sent_at",
        "short_error",
    ]
    list_filter = ["status", "channel", "event"]
    search_fields = ["user__username", "recipient", "subject_code", "key", "event_key"]
    list_select_related = ["user"]
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]
    actions = ["resend"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description=_("last error"))
    def short_error(self, obj: OutboxMessage) -> str:
        return obj.last_error[:80]

    @admin.action(description=_("Send again"))
    def resend(self, request, queryset):
        count = services.outbox_resend(messages=queryset)
        self.message_user(
            request, ngettext("%d message queued again.", "%d messages queued again.", count) % count, messages.SUCCESS
        )

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(SentSms)
class SentSmsAdmin(admin.ModelAdmin):
    list_display = ["created_at", "to", "body", "encoding", "segments", "user"]
    search_fields = ["to", "body", "user__username"]
    list_select_related = ["user"]
    readonly_fields = ["user", "to", "body", "encoding", "segments", "key", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "user", "event", "title", "read_at"]
    list_filter = ["event", "level"]
    search_fields = ["user__username", "title"]
    list_select_related = ["user"]
    raw_id_fields = ["user", "outbox"]
    show_full_result_count = False


@admin.register(Preference)
class PreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "event", "channel", "enabled"]
    list_filter = ["event", "channel", "enabled"]
    raw_id_fields = ["user"]


@admin.register(PhoneVerification)
class PhoneVerificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "user", "phone", "attempts", "expires_at", "verified_at"]
    search_fields = ["user__username", "phone"]
    exclude = ["code_hash"]
    readonly_fields = ["user", "phone", "created_at", "expires_at", "attempts", "verified_at"]
