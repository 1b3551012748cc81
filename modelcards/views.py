from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from common.pagination import paginate

from . import services
from .cards import render_sections
from .models import BaseModel, FineTunedModel, Method, Modality

# The fine-tuned models are a grid of cards of two, three or four columns: 24 (not common.pagination's
# PAGE_SIZE) fills every row of each.
FINE_TUNES_PER_PAGE = 24


def _api_base(request: HttpRequest) -> str:
    return request.build_absolute_uri("/api/paas/v4")


def _card_for_user(request: HttpRequest, code: str) -> BaseModel | FineTunedModel:
    """A base model the user may use, or one of the user's own live fine-tuned models; else 404."""
    base = BaseModel.objects.usable_by(request.user).filter(code=code).first()
    if base is not None:
        return base
    tuned = FineTunedModel.objects.live().owned_by(request.user).select_related("base_model").filter(code=code).first()
    if tuned is None:
        raise Http404(_("No such model."))
    return tuned


@login_required
def model_square(request: HttpRequest) -> HttpResponse:
    kind = request.GET.get("kind", "")
    modality = request.GET.get("modality", "")
    method = request.GET.get("method", "")
    bases: list[BaseModel] = []
    if kind in ("", "base"):
        qs = BaseModel.objects.usable_by(request.user)
        if modality in Modality.values:
            qs = qs.filter(modality=modality)
        bases = [m for m in qs if method not in Method.values or method in m.methods]
    tuned = FineTunedModel.objects.none()
    if kind in ("", "fine_tuned"):
        tuned = FineTunedModel.objects.live().results().owned_by(request.user).select_related("base_model")
        if modality in Modality.values:
            tuned = tuned.filter(base_model__modality=modality)
        if method in Method.values:
            tuned = tuned.filter(method=method)
    page = paginate(request, tuned, per_page=FINE_TUNES_PER_PAGE)
    context = {
        "bases": bases,
        "page": page,
        "kind": kind,
        "modality": modality,
        "method": method,
        "modalities": Modality.choices,
        "methods": Method.choices,
        "filtered": bool(kind or modality or method),
    }
    return render(request, "modelcards/square.html", context)


def _code_samples(request: HttpRequest, code: str) -> dict[str, str]:
    base = _api_base(request)
    return {
        "zhipuai": (
            "from zhipuai import ZhipuAI\n\n"
            f'client = ZhipuAI(api_key="<your API key>", base_url="{base}")\n'
            "response = client.chat.completions.create(\n"
            f'    model="{code}",\n'
            '    messages=[{"role": "user", "content": "Hello!"}],\n'
            ")\n"
            "print(response.choices[0].message.content)\n"
        ),
        "openai": (
            "from openai import OpenAI\n\n"
            f'client = OpenAI(api_key="<your API key>", base_url="{base}")\n'
            "stream = client.chat.completions.create(\n"
            f'    model="{code}",\n'
            '    messages=[{"role": "user", "content": "Hello!"}],\n'
            "    stream=True,\n"
            ")\n"
            "for chunk in stream:\n"
            '    print(chunk.choices[0].delta.content or "", end="", flush=True)\n'
        ),
        "curl": (
            f"curl {base}/chat/completions \\\n"
            '  -H "Authorization: Bearer <your API key>" -H "Content-Type: application/json" \\\n'
            f'  -d \'{{"model": "{code}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'\n'
        ),
    }


@login_required
def model_detail(request: HttpRequest, code: str) -> HttpResponse:
    card = _card_for_user(request, code)
    context = {"card": card, "samples": _code_samples(request, card.code), "sections": render_sections(request, card)}
    if isinstance(card, BaseModel):
        card.present, card.where = card.weights_status()
        context["capabilities"] = card.capabilities()
        return render(request, "modelcards/base_detail.html", context)
    context["files"] = services.fine_tuned_model_files(card)
    context["download_bytes"] = sum(f.size for f in context["files"])
    context["checkpoints"] = list(card.checkpoints.live().order_by("step")) if not card.is_checkpoint else []
    losses = [(c.metrics.get("final_eval_loss"), c.pk) for c in context["checkpoints"]]
    losses = [pair for pair in losses if isinstance(pair[0], int | float)]
    context["best_checkpoint_id"] = min(losses)[1] if len(losses) > 1 else None
    return render(request, "modelcards/fine_tuned_detail.html", context)


@login_required
def model_download(request: HttpRequest, code: str) -> HttpResponse:
    card = _card_for_user(request, code)
    if not isinstance(card, FineTunedModel) or not services.fine_tuned_model_files(card):
        raise Http404(_("This model has no files to download."))
    response = StreamingHttpResponse(services.fine_tuned_model_zip(card), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{card.code.replace(":", "-")}.zip"'
    return response


@login_required
@require_http_methods(["GET", "POST"])
def model_delete(request: HttpRequest, code: str) -> HttpResponse:
    card = _card_for_user(request, code)
    if not isinstance(card, FineTunedModel):
        raise Http404(_("Base models are managed by operators."))
    if request.method == "POST":
        try:
            services.fine_tuned_model_delete(model=card)
        except services.ModelActionRefused as exc:
            messages.error(request, str(exc))
            return redirect("modelcards:detail", card.code)
        messages.success(request, _("Model %(code)s deleted: it can no longer be called.") % {"code": card.code})
        return redirect("modelcards:square")
    consequences = services.fine_tuned_model_delete_preview(model=card)
    return render(request, "modelcards/confirm_delete.html", {"card": card, "consequences": consequences})


def _own_fine_tune(request: HttpRequest, code: str) -> FineTunedModel:
    card = _card_for_user(request, code)
    if not isinstance(card, FineTunedModel):
        raise Http404(_("Base models are managed by operators."))
    return card


def _weights_action(request: HttpRequest, card: FineTunedModel, action, done: str) -> HttpResponse:
    """Run a promotion or a restore; back to the result's card with what happened, or why it could not."""
    try:
        result = action()
    except services.ModelActionRefused as exc:
        messages.error(request, str(exc))
        return redirect("modelcards:detail", card.code)
    messages.success(request, done)
    return redirect("modelcards:detail", result.code)


@login_required
@require_http_methods(["POST"])
def model_promote(request: HttpRequest, code: str) -> HttpResponse:
    """Make a checkpoint's weights its result's (the result's code serves them from now on)."""
    card = _own_fine_tune(request, code)
    if not card.is_checkpoint:
        raise Http404(_("Only a checkpoint can be promoted."))
    done = _("%(result)s now serves the weights of %(code)s (step %(step)s).") % {
        "result": card.checkpoint_of.code,
        "code": card.code,
        "step": card.step,
    }
    return _weights_action(request, card, lambda: services.fine_tuned_model_promote(checkpoint=card), done)


@login_required
@require_http_methods(["POST"])
def model_restore(request: HttpRequest, code: str) -> HttpResponse:
    """A promoted result serves the task's final weights again."""
    card = _own_fine_tune(request, code)
    done = _("%(code)s serves the task's final weights again.") % {"code": card.code}
    return _weights_action(request, card, lambda: services.fine_tuned_model_restore_final(model=card), done)
