from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import services
from .models import (
    Notification,
    OutboxMessage,
    PhoneVerification,
    Preference,
    SentSms,
    WebhookAttempt,
    WebhookEndpoint,
)
from .webhooks import webhook_endpoint_enable


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


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["public_id", "user", "url", "enabled", "consecutive_failures", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["public_id", "url", "user__username"]
    list_select_related = ["user"]
    readonly_fields = [
        "public_id",
        "user",
        "url",
        "consecutive_failures",
        "disabled_at",
        "disabled_reason",
        "created_at",
    ]
    exclude = ["secret"]
    actions = ["enable"]

    @admin.action(description=_("Enable again"))
    def enable(self, request, queryset):
        for endpoint in queryset:
            webhook_endpoint_enable(endpoint=endpoint)
        self.message_user(request, _("Enabled."), messages.SUCCESS)

    def has_add_permission(self, request) -> bool:
        return False  # made by their owners, with a secret shown once


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(admin.ModelAdmin):
    list_display = ["created_at", "endpoint", "event_type", "webhook_id", "attempt", "status_code", "duration_ms", "ok"]
    list_filter = ["ok", "event_type"]
    search_fields = ["webhook_id", "endpoint__url", "endpoint__public_id"]
    list_select_related = ["endpoint"]
    readonly_fields = [f.name for f in WebhookAttempt._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False
