from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .models import BaseModel, Checkpoint, FineTunedModel, FineTuningJob, JobEvent


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = [
        "code", "display_name", "family", "modality", "methods", "training_types",
        "public_pool", "availability", "training_price", "weights", "is_active",
    ]
    list_filter = ["modality", "family", "availability", "public_pool", "is_active", "weights_source"]
    search_fields = ["code", "display_name", "family", "description"]
    list_editable = ["is_active"]

    @admin.display(description=_("weights on this server"), boolean=True)
    def weights(self, obj: BaseModel) -> bool:
        return obj.weights_present


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    fields = ["created_at", "type", "level", "message"]
    readonly_fields = fields
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).filter(type=JobEvent.Type.MESSAGE)


class CheckpointInline(admin.TabularInline):
    model = Checkpoint
    extra = 0
    readonly_fields = ["epoch", "step", "path", "metrics", "created_at"]
    can_delete = False


@admin.register(FineTuningJob)
class FineTuningJobAdmin(admin.ModelAdmin):
    list_display = ["public_id", "owner", "base_model", "method", "training_type", "status", "attempts",
                    "trained_tokens", "estimated_cost", "actual_cost", "created_at", "finished_at"]
    list_filter = ["status", "method", "training_type", "base_model", "created_at"]
    search_fields = ["public_id", "fine_tuned_model", "owner__username", "request_id", "error_message"]
    list_select_related = ["owner", "base_model"]
    readonly_fields = ["public_id", "created_at", "started_at", "first_step_at", "finished_at", "heartbeat_at",
                       "progress", "worker", "attempts", "output_dir"]
    raw_id_fields = ["owner", "training_dataset", "validation_dataset"]
    inlines = [CheckpointInline, JobEventInline]
    actions = ["cancel"]

    @admin.action(description=_("Cancel the selected tasks"))
    def cancel(self, request, queryset):
        from .services import job_cancel

        for job in queryset.active():
            job_cancel(job=job)
        self.message_user(request, _("Cancellation requested."))


@admin.register(FineTunedModel)
class FineTunedModelAdmin(admin.ModelAdmin):
    list_display = ["code", "owner", "base_model", "method", "training_type", "trained_tokens", "cost",
                    "created_at", "deleted_at"]
    list_filter = ["base_model", "method", "training_type", ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["code", "owner__username"]
    list_select_related = ["owner", "base_model"]
    raw_id_fields = ["owner", "job"]
    readonly_fields = ["created_at"]
