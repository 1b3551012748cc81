from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import services
from .models import Evaluation, EvaluationItem, UsageRecord


class EvaluationItemInline(admin.TabularInline):
    model = EvaluationItem
    extra = 0
    can_delete = False
    fields = ["index", "kind", "reference", "pair", "error"]
    readonly_fields = fields


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ["model", "job", "status", "done", "total", "judge_model", "base_f1", "tune_f1", "created_at"]
    list_filter = ["status"]
    search_fields = ["model__code", "job__public_id"]
    readonly_fields = [
        "job",
        "model",
        "status",
        "source",
        "total",
        "done",
        "base_exact",
        "base_f1",
        "tune_exact",
        "tune_f1",
        "error",
        "judge_model",
        "rubric",
        "regression",
        "regression_dataset",
        "regression_source",
        "evaluated",
        "summary",
        "attempts",
        "started_at",
        "heartbeat_at",
        "created_at",
        "finished_at",
    ]
    inlines = [EvaluationItemInline]
    actions = ["rerun"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description=_("Run the evaluation again"))
    def rerun(self, request, queryset):
        started = sum(
            1
            for e in queryset.select_related("job", "regression_dataset")
            if services.evaluation_start(
                job=e.job,
                judge_model=e.judge_model,
                rubric=e.rubric,
                regression=e.regression,
                regression_dataset=e.regression_dataset,
            )
        )
        self.message_user(
            request,
            ngettext("%(n)d evaluation queued.", "%(n)d evaluations queued.", started) % {"n": started},
            messages.SUCCESS,
        )


@admin.register(UsageRecord)
class UsageAdmin(admin.ModelAdmin):
    """Everyone's usage, aggregated per day, user and model, with training per task (the operator's view)."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_staff and request.user.has_perm("deployments.view_apicall")

    def changelist_view(self, request, extra_context=None):
        from .views import _period, write_usage_csv

        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        start, end = _period(request)
        report = services.usage_report(user=None, start=start, end=end)
        if request.GET.get("format") == "csv":
            response = HttpResponse(content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="usage-all-{start}-{end}.csv"'
            write_usage_csv(response, report, with_user=True)
            return response
        context = {
            **self.admin_site.each_context(request),
            "title": _("Usage of every user"),
            "opts": self.model._meta,
            "report": report,
            "chart": services.usage_chart(report=report),
            "with_user": True,
        }
        return TemplateResponse(request, "admin/experience/usage.html", context)
