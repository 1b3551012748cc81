from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import services
from .models import ApiCall, Deployment, DeploymentEvent, Instance, MergedExport, Node


class InstanceInline(admin.TabularInline):
    model = Instance
    extra = 0
    can_delete = False
    fields = ("node", "runtime", "state", "port", "pid", "ready_at", "error")
    readonly_fields = fields
    show_change_link = True


class EventInline(admin.TabularInline):
    model = DeploymentEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "level", "message")
    readonly_fields = fields


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = (
        "code",
        "kind",
        "owner",
        "base_model",
        "fine_tuned_model",
        "status",
        "ready_instances",
        "desired_instances",
        "created_at",
    )
    list_filter = ("kind", "status")
    search_fields = ("code", "public_id", "owner__username")
    readonly_fields = (
        "public_id",
        "kind",
        "owner",
        "code",
        "base_model",
        "fine_tuned_model",
        "status",
        "status_reason",
        "ready_instances",
        "created_at",
        "first_ready_at",
        "cancelled_at",
    )
    inlines = [InstanceInline, EventInline]
    actions = ["cancel"]

    def get_fields(self, request, obj=None):
        if obj is not None and obj.is_pool:  # a pool scales by load between the two; the count is the reconciler's
            return ("min_instances", "max_instances", "desired_instances", *self.readonly_fields)
        return ("desired_instances", *self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.is_pool:
            return (*self.readonly_fields, "desired_instances")
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        # Counts go through the service, like the page and the API.
        if change and obj.is_pool and {"min_instances", "max_instances"} & set(form.changed_data):
            services.pool_limits(pool=obj, low=obj.min_instances, high=obj.max_instances)
        elif change and "desired_instances" in form.changed_data:
            services.deployment_scale(deployment=obj, instances=obj.desired_instances)
        elif not change:
            super().save_model(request, obj, form, change)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description=_("Cancel the selected deployments"))
    def cancel(self, request, queryset):
        for deployment in queryset:
            services.deployment_cancel(deployment=deployment, reason=str(_("Cancelled by an operator.")))
        n = queryset.count()
        messages.success(request, ngettext("Cancelled %(n)s deployment.", "Cancelled %(n)s deployments.", n) % {"n": n})


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ("id", "deployment", "node", "runtime", "state", "port", "pid", "ready_at")
    list_filter = ("state", "node", "runtime")
    readonly_fields = [f.name for f in Instance._meta.fields if f.name != "api_key"]
    exclude = ("api_key",)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("name", "runtime", "slots", "omp_threads", "memory_mb", "enabled", "heartbeat_at", "alive")
    list_editable = ("enabled",)
    readonly_fields = ("hostname", "runtime", "runtime_note", "agent_pid", "started_at", "heartbeat_at")

    @admin.display(boolean=True, description=_("alive"))
    def alive(self, obj: Node) -> bool:
        return obj.is_alive


@admin.register(ApiCall)
class ApiCallAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "user",
        "model",
        "status_code",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "latency_ms",
    )
    list_filter = ("status_code", "stream")
    search_fields = ("model", "request_id", "user__username")
    readonly_fields = [f.name for f in ApiCall._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(MergedExport)
class MergedExportAdmin(admin.ModelAdmin):
    """Read-only: users build exports from the model card; a failed one says why here too."""

    list_display = ("fine_tuned_model", "status", "size_bytes", "created_at", "finished_at")
    list_filter = ("status",)
    search_fields = ("fine_tuned_model__code",)
    readonly_fields = [f.name for f in MergedExport._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
