from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .models import Dataset, ValidationIssue
from .services import DatasetInUse, dataset_delete
from .states import datasets_revalidate


class ValidationIssueInline(admin.TabularInline):
    model = ValidationIssue
    fields = ("severity", "line", "path", "message")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("severity", "line", "id")


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "public_id",
        "owner",
        "category",
        "status",
        "examples",
        "tokens",
        "bytes",
        "error_count",
        "warning_count",
        "created_at",
    )
    list_filter = ("status", "category", "purpose")
    search_fields = ("name", "public_id", "filename", "owner__username", "owner__email")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    readonly_fields = (
        "public_id",
        "owner",
        "filename",
        "purpose",
        "file",
        "bytes",
        "sha256",
        "request_id",
        "status",
        "status_message",
        "bytes_read",
        "heartbeat_at",
        "validation_started_at",
        "validated_at",
        "category_auto",
        "lines",
        "examples",
        "legacy_examples",
        "tokens",
        "text_tokens",
        "images",
        "longest_example_tokens",
        "truncated_examples",
        "duplicate_lines",
        "error_count",
        "warning_count",
        "report",
        "created_at",
        "updated_at",
    )
    fields = ("name", "category", "base_model", *readonly_fields)
    inlines = [ValidationIssueInline]
    actions = ["revalidate"]

    def has_add_permission(self, request):
        return False  # datasets come in through the upload page or the files API

    @admin.action(description=_("Validate again (after changing category or base model)"))
    def revalidate(self, request, queryset):
        ids = datasets_revalidate(ids=list(queryset.values_list("id", flat=True)))
        self.message_user(
            request,
            ngettext("%(n)s dataset queued for validation.", "%(n)s datasets queued for validation.", len(ids))
            % {"n": len(ids)},
        )

    def delete_model(self, request, obj):
        try:
            dataset_delete(dataset=obj)
        except DatasetInUse as exc:
            self.message_user(request, exc.message, level=messages.ERROR)

    def delete_queryset(self, request, queryset):
        for dataset in queryset:
            self.delete_model(request, dataset)
