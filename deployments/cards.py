"""What serving adds to model cards: the card's deployments with a Deploy button, and cancelling every deployment
of a fine-tuned model when its card is deleted."""

from __future__ import annotations

import shutil

from django.db import transaction
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

from common.queueing import enqueue, enqueue_on_commit
from modelcards.models import FineTunedModel

from .models import Deployment, DeploymentStatus, ExportStatus

BUILDING_STATES = (ExportStatus.QUEUED, ExportStatus.BUILDING)


def on_fine_tuned_model_deleted(sender, model: FineTunedModel, **kwargs) -> None:
    """Inside the delete's transaction: cancel each deployment; its merged folder goes after the commit."""
    from . import services
    from .exports import merged_export_delete_files
    from .targets import merged_dir

    services.deployments_cancel_for_model(model=model)
    folder = merged_dir(model)
    transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))
    transaction.on_commit(lambda: merged_export_delete_files(model))
    if model.is_lora:
        serving_name = model.serving_name
        enqueue_on_commit("deployments.unload_adapter", serving_name, on_failure=lambda exc: _unload_here(serving_name))


def on_fine_tuned_model_weights_changed(sender, model: FineTunedModel, previous_name: str, **kwargs) -> None:
    """After a promotion's commit: what was built or loaded from the old weights goes (the merged copy, the merged
    download, the adapter in pool instances). Calls already use the new weights: they have a new serving name."""
    from .exports import merged_export_delete_files
    from .models import MergedExport
    from .targets import merged_dir

    shutil.rmtree(merged_dir(model, previous_name), ignore_errors=True)
    MergedExport.objects.filter(fine_tuned_model=model).delete()
    merged_export_delete_files(model)
    if model.is_lora:
        _unload(previous_name)


def promotion_blockers(card) -> list[str]:
    """A running deployment serves the weights it loaded: a promotion waits until it is cancelled."""
    return [
        _("Its deployment %(code)s serves its current weights: cancel it first (or deploy the checkpoint itself).")
        % {"code": d.code}
        for d in Deployment.objects.filter(fine_tuned_model=card).exclude(
            status__in=[DeploymentStatus.CANCELLED, DeploymentStatus.FAILED]
        )
    ]


def _unload(code: str) -> None:
    """Out of every pool instance that holds its adapter (a worker does it; at once if the broker is away)."""
    enqueue("deployments.unload_adapter", code, on_failure=lambda exc: _unload_here(code))


def _unload_here(code: str) -> None:
    from . import services

    services.adapter_unload_everywhere(code=code)


def _deployments_of(user, card):
    qs = Deployment.objects.owned_by(user).exclude(status=DeploymentStatus.CANCELLED)
    if isinstance(card, FineTunedModel):
        return qs.filter(fine_tuned_model=card)
    return qs.filter(base_model=card, fine_tuned_model__isnull=True)


def card_section(request, card) -> str | None:
    if not request.user.is_authenticated:
        return None
    if isinstance(card, FineTunedModel) and card.owner_id != request.user.pk:
        return None
    deployments = list(_deployments_of(request.user, card)[:20])
    return render_to_string(
        "deployments/_card_section.html", {"card": card, "deployments": deployments}, request=request
    )


def export_section(request, card) -> str | None:
    """A LoRA fine-tune's merged download: build it once, watch it build, download it."""
    if not (
        request.user.is_authenticated
        and isinstance(card, FineTunedModel)
        and card.is_lora
        and card.owner_id == request.user.pk
    ):
        return None
    return render_export_section(request, card)[0]


def render_export_section(request, card) -> tuple[str, bool]:
    """The section's HTML, and whether it is still building (its poll goes on)."""
    from .exports import merged_export_files, merged_export_of

    export = merged_export_of(card)
    files = merged_export_files(export) if export else []
    building = bool(export and export.status in BUILDING_STATES)
    html = render_to_string(
        "deployments/_export_section.html",
        {
            "card": card,
            "export": export,
            "files": files,
            "building": building,
        },
        request=request,
    )
    return html, building


def delete_consequences(card) -> list[str]:
    if not isinstance(card, FineTunedModel):
        return []
    return [
        _("Its deployment %(code)s will be cancelled.") % {"code": d.code}
        for d in Deployment.objects.filter(fine_tuned_model=card).exclude(status=DeploymentStatus.CANCELLED)
    ]


def health_report() -> dict:
    """/healthz's "serving" entry: each node, whether its agent answers, and its slots in use."""
    from django.db.models import Count, Q
    from django.utils import timezone

    from .models import HOLDS_SLOT, Node

    now = timezone.now()
    nodes = [
        {
            "name": node.name,
            "alive": node.is_alive,
            "runtime": node.runtime,
            **({"runtime_note": node.runtime_note} if node.runtime_note else {}),
            "slots": node.slots,
            "used": node.used,
            "heartbeat_seconds_ago": round((now - node.heartbeat_at).total_seconds(), 1) if node.heartbeat_at else None,
        }
        for node in Node.objects.annotate(used=Count("instances", filter=Q(instances__state__in=HOLDS_SLOT)))
    ]
    return {"nodes": nodes, "alive": sum(1 for n in nodes if n["alive"])}


def deploy_action(request, card, place: str) -> dict | None:
    """The Deploy button of a model (modelcards.cards.register_action): a base model only where it can be served;
    a fine-tuned model's main action on its own page."""
    from urllib.parse import quote

    from django.urls import reverse

    from modelcards.models import BaseModel

    if card is None or place not in ("page", "square"):
        return None
    base = isinstance(card, BaseModel)
    if base and not card.capabilities().serve:
        return None
    return {
        "label": _("Deploy"),
        "url": f"{reverse('deployments:create')}?model={quote(card.code)}",
        "primary": place == "page" and not base,
    }
