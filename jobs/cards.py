"""The training section of a fine-tuned model's card (registered with modelcards from JobsConfig.ready)."""

from __future__ import annotations

from django.template.loader import render_to_string

from . import charts
from .models import FineTuningJob


def training_section(request, card) -> str | None:
    from modelcards.models import FineTunedModel

    if not isinstance(card, FineTunedModel):
        return None
    job = (
        FineTuningJob.objects.select_related("training_dataset", "validation_dataset")
        .filter(result=card.result, owner=card.owner)  # a checkpoint's: its result's task
        .first()
    )
    if job is None:
        return None
    context = {"job": job, "card": card, "chart": charts.loss_chart(charts.chart_metrics(job))}
    return render_to_string("jobs/_card_training.html", context, request=request)


def overview_panel(request) -> dict:
    from django.db.models import Count, Q

    return FineTuningJob.objects.filter(owner=request.user).aggregate(
        total=Count("id"), running=Count("id", filter=Q(status="running")),
        queued=Count("id", filter=Q(status__in=["queued", "validating_files"])),
        succeeded=Count("id", filter=Q(status="succeeded")), failed=Count("id", filter=Q(status="failed")),
    )


def overview_recent(request) -> dict | None:
    recent = list(FineTuningJob.objects.filter(owner=request.user).select_related("base_model")[:5])
    return {"recent": recent} if recent else None
