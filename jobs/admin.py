from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from .models import Checkpoint, FineTuningJob, JobEvent


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    fields = ["created_at", "type", "level", "message"]
    readonly_fields = fields
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).filter(type=JobEvent.Type.MESSAGE)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class CheckpointInline(admin.TabularInline):
    model = Checkpoint
    extra = 0
    readonly_fields = ["epoch", "step", "path", "metrics", "created_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FineTuningJob)
class FineTuningJobAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "owner",
        "base_model",
        "method",
        "training_type",
        "status",
        "attempts",
        "trained_tokens",
        "estimated_cost",
        "actual_cost",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "method", "training_type", "base_model", "created_at"]
    search_fields = ["public_id", "fine_tuned_model", "owner__username", "request_id", "error_message"]
    list_select_related = ["owner", "base_model"]
    # A task's live state belongs to the worker and the service; the admin shows it, never edits it.
    readonly_fields = [
        "public_id",
        "owner",
        "base_model",
        "training_dataset",
        "validation_dataset",
        "method",
        "training_type",
        "hyperparameters",
        "resolved_hyperparameters",
        "suffix",
        "seed",
        "metadata",
        "fine_tuned_model",
        "request_id",
        "status",
        "error_code",
        "error_message",
        "error_param",
        "estimated_tokens",
        "estimated_cost",
        "trained_tokens",
        "actual_cost",
        "progress",
        "worker",
        "heartbeat_at",
        "attempts",
        "cancel_requested_at",
        "output_dir",
        "result",
        "created_at",
        "started_at",
        "first_step_at",
        "finished_at",
    ]
    inlines = [CheckpointInline, JobEventInline]
    actions = ["cancel"]

    # Tasks are created in the console or through the API, where the service checks data, model and limits.
    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description=_("Cancel the selected tasks"))
    def cancel(self, request, queryset):
        from .states import job_cancel

        for job in queryset.active():
            job_cancel(job=job)
        self.message_user(request, _("Cancellation requested."))

    # Deleting goes through the service: only finished tasks without a live model, files removed.
    def delete_model(self, request, obj):
        from .services import JobNotDeletable, job_delete

        try:
            job_delete(job=obj)
        except JobNotDeletable as exc:
            self.message_user(request, f"{obj.public_id}: {exc}", level=messages.ERROR)

    def delete_queryset(self, request, queryset):
        for job in queryset:
            self.delete_model(request, job)
