"""The training section of a fine-tuned model's card (registered with modelcards from JobsConfig.ready)."""

from __future__ import annotations

from django.template.loader import render_to_string

from . import charts
from .models import FineTuningJob, JobStatus


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
        total=Count("id"),
        running=Count("id", filter=Q(status=JobStatus.RUNNING)),
        queued=Count("id", filter=Q(status__in=[JobStatus.QUEUED, JobStatus.VALIDATING_FILES])),
        succeeded=Count("id", filter=Q(status=JobStatus.SUCCEEDED)),
        failed=Count("id", filter=Q(status=JobStatus.FAILED)),
    )


def overview_recent(request) -> dict | None:
    recent = list(FineTuningJob.objects.filter(owner=request.user).select_related("base_model")[:5])
    return {"recent": recent} if recent else None


def fine_tune_action(request, card, place: str) -> dict | None:
    """The Fine-tune button of a base model's card (modelcards.cards.register_action), and the model square's
    hint when the user has no fine-tuned model yet."""
    from django.urls import reverse
    from django.utils.translation import gettext as _

    from modelcards.models import BaseModel

    if place == "no-fine-tuned":
        return {"label": _("Create a fine-tuning task"), "url": reverse("jobs:create")}
    if not isinstance(card, BaseModel) or place not in ("page", "square"):
        return None
    capabilities = card.capabilities()
    if capabilities.can_train:
        url = f"{reverse('jobs:create')}?model={card.code}"
        return {"label": _("Fine-tune"), "url": url, "primary": place == "page"}
    if place == "square":
        return {"label": _("Fine-tune"), "url": None, "reason": capabilities.train_reason}
    return None


def dataset_fine_tune_action(request, dataset, place: str) -> dict | None:
    """A ready dataset's "Fine-tune on it" (datasets.next_steps.register_action)."""
    from django.urls import reverse
    from django.utils.translation import gettext as _

    from datasets.models import Status as DatasetStatus

    if dataset.status != DatasetStatus.READY:
        return None
    return {
        "label": _("Fine-tune on it"),
        "url": f"{reverse('jobs:create')}?dataset={dataset.pk}",
        "primary": True,
        "testid": "fine-tune-link",
    }
