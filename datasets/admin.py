from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .models import Dataset, Status, ValidationIssue
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
    # Validation reads these two (the rules of the category, the tokenizer of the base model): a change validates
    # the file again, so counts, tokens and issues never describe another category or model.
    VALIDATED_WITH = ("category", "base_model")
    fields = ("name", *VALIDATED_WITH, *readonly_fields)
    inlines = [ValidationIssueInline]
    actions = ["revalidate"]

    def has_add_permission(self, request):
        return False  # datasets come in through the upload page or the files API

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status == Status.VALIDATING:  # the worker reads them now; change them after
            return (*self.VALIDATED_WITH, *self.readonly_fields)
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        """Saves only what the form changed (the worker writes the rest meanwhile); a new category or base model
        sends the dataset back through validation (datasets.states), in the same transaction."""
        changed = [name for name in form.changed_data if name in ("name", *self.VALIDATED_WITH)]
        if set(changed) & set(self.VALIDATED_WITH):
            if datasets_revalidate(ids=[obj.pk]):
                self.message_user(request, _("The dataset is validated again with its new category or base model."))
            else:  # a worker claimed it since the form was opened: it keeps what it is validated with
                changed = [name for name in changed if name not in self.VALIDATED_WITH]
                self.message_user(
                    request,
                    _("The dataset is being validated: its category and base model were left as they were."),
                    level=messages.WARNING,
                )
        if changed:
            obj.save(update_fields=[*changed, "updated_at"])

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
