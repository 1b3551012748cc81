from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .models import BaseModel, FineTunedModel
from .services import fine_tuned_model_delete


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "display_name",
        "family",
        "modality",
        "methods",
        "training_types",
        "public_pool",
        "availability",
        "training_price",
        "weights",
        "trainable",
        "is_active",
    ]
    list_filter = ["modality", "family", "availability", "public_pool", "is_active", "weights_source"]
    search_fields = ["code", "display_name", "family", "description"]
    list_editable = ["is_active"]

    @admin.display(description=_("weights on this server"), boolean=True)
    def weights(self, obj: BaseModel) -> bool:
        return obj.weights_present

    @admin.display(description=_("this server can train it"), boolean=True)
    def trainable(self, obj: BaseModel) -> bool:
        return obj.capabilities().can_train


@admin.register(FineTunedModel)
class FineTunedModelAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "owner",
        "base_model",
        "method",
        "training_type",
        "trained_tokens",
        "cost",
        "created_at",
        "deleted_at",
    ]
    list_filter = ["base_model", "method", "training_type", ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["code", "owner__username"]
    list_select_related = ["owner", "base_model"]
    raw_id_fields = ["owner"]
    readonly_fields = [
        "code",
        "owner",
        "base_model",
        "method",
        "training_type",
        "hyperparameters",
        "metrics",
        "trained_tokens",
        "cost",
        "path",
        "created_at",
        "deleted_at",
    ]

    def has_add_permission(self, request):
        return False  # fine-tuned models come from finished tasks

    # Deleting goes through the service: files removed, deployments cancelled, code no longer callable.
    def delete_model(self, request, obj):
        fine_tuned_model_delete(model=obj)

    def delete_queryset(self, request, queryset):
        n = 0
        for model in queryset.filter(deleted_at__isnull=True):
            fine_tuned_model_delete(model=model)
            n += 1
        self.message_user(request, ngettext("%(n)s model deleted.", "%(n)s models deleted.", n) % {"n": n})
