"""Private instances pages: list, create, detail (live while instances start), scale inline, cancel; and the model
card's merged download (build, watch, download)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods, require_POST

from common.pagination import paginate
from common.polling import polled

from . import services
from .forms import DeploymentForm, ScaleForm
from .models import ApiCall, Deployment, DeploymentStatus, Instance, InstanceState


def _get_deployment_for_user(request: HttpRequest, public_id: str) -> Deployment:
    deployment = (
        Deployment.objects.owned_by(request.user)
        .select_related("base_model", "fine_tuned_model")
        .filter(public_id=public_id)
        .first()
    )
    if deployment is None:
        raise Http404(_("No such deployment."))
    return deployment


def _settled(deployment: Deployment) -> bool:
    """Nothing left to watch: final, or running with no instance starting or stopping."""
    if deployment.status == DeploymentStatus.CANCELLED:
        return not deployment.instances.exclude(state__in=[InstanceState.STOPPED, InstanceState.FAILED]).exists()
    if deployment.status == DeploymentStatus.FAILED:
        return True
    return False


@login_required
def deployment_list(request: HttpRequest) -> HttpResponse:
    qs = Deployment.objects.owned_by(request.user).select_related("base_model", "fine_tuned_model")
    page = paginate(request, qs)
    has_active = any(not d.is_final for d in page.object_list)
    context = {"page": page, "has_active": has_active}
    if request.htmx and request.GET.get("partial") == "table":
        response = render(request, "deployments/list.html#table", context)
        return polled(response, settled=not has_active)
    return render(request, "deployments/list.html", context)


@login_required
def deployment_create(request: HttpRequest) -> HttpResponse:
    form = DeploymentForm(
        request.POST or None, user=request.user, initial={"model": request.GET.get("model", ""), "instances": 1}
    )
    if request.method == "POST" and form.is_valid():
        try:
            model = services.deployable_model(user=request.user, code=form.cleaned_data["model"])
            deployment = services.deployment_create(
                user=request.user, model=model, instances=form.cleaned_data["instances"]
            )
        except services.DeploymentInputError as exc:
            form.add_error(exc.param if exc.param in form.fields else None, exc.message)
        else:
            messages.success(
                request, _("Deployment %(code)s created: its instances are starting.") % {"code": deployment.code}
            )
            return redirect("deployments:detail", deployment.public_id)
    return render(request, "deployments/create.html", {"form": form})


def _live_context(deployment: Deployment) -> dict:
    instances = list(Instance.objects.filter(deployment=deployment).select_related("node").order_by("-id")[:20])
    return {
        "deployment": deployment,
        "instances": instances,
        "events": list(deployment.events.all()[:30]),
        "calls": list(ApiCall.objects.filter(deployment=deployment).order_by("-id")[:15]),
        "scale_form": ScaleForm(initial={"instances": deployment.desired_instances}),
    }


@login_required
def deployment_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    deployment = _get_deployment_for_user(request, public_id)
    context = _live_context(deployment)
    if request.htmx and request.GET.get("partial") == "live":
        # The page's buttons follow the state: the partial carries them as out-of-band swaps.
        response = render(request, "deployments/detail.html#live", {**context, "oob": True})
        return polled(response, settled=_settled(deployment))
    return render(request, "deployments/detail.html", context)


@login_required
@require_POST
def deployment_scale(request: HttpRequest, public_id: str) -> HttpResponse:
    deployment = _get_deployment_for_user(request, public_id)
    form = ScaleForm(request.POST)
    if form.is_valid():
        try:
            services.deployment_scale(deployment=deployment, instances=form.cleaned_data["instances"])
        except services.DeploymentInputError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                ngettext(
                    "Scaling %(code)s to %(n)s instance.",
                    "Scaling %(code)s to %(n)s instances.",
                    form.cleaned_data["instances"],
                )
                % {"code": deployment.code, "n": form.cleaned_data["instances"]},
            )
    else:
        messages.error(request, "; ".join(str(e) for errors in form.errors.values() for e in errors))
    return redirect("deployments:detail", deployment.public_id)


@login_required
def deployment_cancel(request: HttpRequest, public_id: str) -> HttpResponse:
    deployment = _get_deployment_for_user(request, public_id)
    if request.method == "POST":
        if deployment.status == DeploymentStatus.CANCELLED:
            messages.info(request, _("The deployment was already cancelled."))
        else:
            services.deployment_cancel(deployment=deployment)
            messages.success(
                request,
                _("Deployment %(code)s cancelled: its code can no longer be called.") % {"code": deployment.code},
            )
        return redirect("deployments:detail", deployment.public_id)
    return render(request, "deployments/confirm_cancel.html", {"deployment": deployment})


def _lora_card_for_user(request: HttpRequest, code: str):
    from modelcards.models import FineTunedModel

    card = FineTunedModel.objects.live().owned_by(request.user).select_related("base_model").filter(code=code).first()
    if card is None or not card.is_lora:
        raise Http404(_("No such LoRA fine-tune."))
    return card


@login_required
@require_http_methods(["GET", "POST"])
def model_export(request: HttpRequest, code: str) -> HttpResponse:
    """POST: build the merged model (once); GET: the card's section, polled while it builds."""
    from . import cards, exports

    card = _lora_card_for_user(request, code)
    if request.method == "POST":
        exports.merged_export_request(model=card)
        if not request.htmx:
            messages.success(request, _("The merged model is being built; its download appears here when it is ready."))
            return redirect("modelcards:detail", card.code)
    html, building = cards.render_export_section(request, card)
    return polled(html, settled=bool(request.htmx) and request.method == "GET" and not building)


@login_required
def model_export_download(request: HttpRequest, code: str) -> HttpResponse:
    from . import exports

    card = _lora_card_for_user(request, code)
    export = exports.merged_export_of(card)
    if export is None or not exports.merged_export_files(export):
        raise Http404(_("The merged model has not been built yet."))
    response = StreamingHttpResponse(exports.merged_export_zip(export), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{card.code.replace(":", "-")}-merged.zip"'
    return response
