"""Experience center (chat, side by side), the session-authenticated chat endpoint, evaluation controls and the
usage page."""

from __future__ import annotations

import csv
import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from common.polling import polled
from deployments import gateway
from jobs.models import FineTuningJob
from modelcards.models import FineTunedModel

from . import services
from .asgi import endpoint as chat_endpoint
from .cards import evaluation_context
from .forms import EvaluationForm
from .models import Evaluation


@login_required
def playground(request: HttpRequest) -> HttpResponse:
    models = services.callable_models(user=request.user)
    chosen = request.GET.get("model", "")
    # What cannot be served is listed, disabled, with the reason; it is never chosen.
    codes = {m["code"]: m for m in models if not m.get("disabled")}
    if chosen and chosen not in codes:
        chosen = ""
    chosen = chosen or next(iter(codes), "")
    compare = request.GET.get("compare", "")
    if compare not in codes:  # side by side by default for a fine-tune: its base model
        compare = codes[chosen]["base"] if chosen and codes[chosen]["kind"] in ("fine-tune", "checkpoint") else ""
        compare = compare if compare in codes else ""
    context = {
        "models": models,
        "unavailable": [m for m in models if m.get("disabled")],
        "chosen": chosen,
        "compare": compare,
        "base_url": request.build_absolute_uri("/api/paas/v4/"),
    }
    return render(request, "experience/playground.html", context)


# The chat endpoint is experience/asgi.py's, served before Django under uvicorn; a request for its URL that reaches
# Django (the test client, a WSGI server) is handed to that same endpoint.
playground_chat = gateway.django_view(chat_endpoint)


def _card_for_user(request: HttpRequest, code: str) -> FineTunedModel:
    card = FineTunedModel.objects.live().filter(code=code, owner=request.user).select_related("base_model").first()
    if card is None:
        raise Http404(_("No such model."))
    return card


def _panel(request: HttpRequest, card: FineTunedModel, form=None) -> HttpResponse:
    context = evaluation_context(card, request=request, form=form)
    if context is None:
        raise Http404(_("No evaluation."))
    return render(request, "experience/_card_evaluation.html", context)


@login_required
def evaluation_panel(request: HttpRequest, code: str) -> HttpResponse:
    """The card's evaluation section, polled while an evaluation runs (and paged through)."""
    card = _card_for_user(request, code)
    response = _panel(request, card)
    evaluation = Evaluation.objects.filter(model=card).first()
    return polled(response, settled=evaluation is None or evaluation.is_final)


@login_required
@require_POST
def evaluation_rerun(request: HttpRequest, code: str) -> HttpResponse:
    card = _card_for_user(request, code)
    job = FineTuningJob.objects.filter(result=card, owner=request.user).first()
    if job is None:
        raise Http404(_("No task made this model."))
    form = EvaluationForm(request.POST, user=request.user)
    if not form.is_valid():
        if request.htmx:
            return _panel(request, card, form=form)
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
        return redirect("modelcards:detail", card.code)
    services.evaluation_start(job=job, **form.start_arguments())
    if request.htmx:
        return _panel(request, card)
    return redirect("modelcards:detail", card.code)


@login_required
@require_POST
def evaluation_cancel(request: HttpRequest, code: str) -> HttpResponse:
    card = _card_for_user(request, code)
    evaluation = Evaluation.objects.filter(model=card, job__owner=request.user).first()
    if evaluation is None:
        raise Http404(_("No evaluation."))
    services.evaluation_cancel(evaluation=evaluation)
    if request.htmx:
        return _panel(request, card)
    return redirect("modelcards:detail", card.code)


def _period(request: HttpRequest) -> tuple[dt.date, dt.date]:
    today = timezone.localdate()
    try:
        end = dt.date.fromisoformat(request.GET.get("end") or today.isoformat())
        start = dt.date.fromisoformat(request.GET.get("start") or (end - dt.timedelta(days=29)).isoformat())
    except ValueError:
        start, end = today - dt.timedelta(days=29), today
    if start > end:
        start, end = end, start
    return max(start, end - dt.timedelta(days=366)), end


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    start, end = _period(request)
    report = services.usage_report(user=request.user, start=start, end=end)
    context = {"report": report, "chart": services.usage_chart(report=report)}
    return render(request, "experience/usage.html", context)


@login_required
def usage_csv(request: HttpRequest) -> HttpResponse:
    start, end = _period(request)
    report = services.usage_report(user=request.user, start=start, end=end)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{start}-{end}.csv"'
    write_usage_csv(response, report)
    return response


def write_usage_csv(out, report: dict, *, with_user: bool = False) -> None:
    """Headers and kinds in the reader's language; dates ISO and numbers plain, so that a program reads it too."""
    writer = csv.writer(out)
    head = (
        [_("Kind"), _("Date")]
        + ([_("User")] if with_user else [])
        + [_("Model"), _("Calls"), _("Errors"), _("Prompt tokens"), _("Completion tokens"), _("Tokens"), _("Cost")]
    )
    writer.writerow(head)
    for r in report["rows"]:
        writer.writerow(
            [_("Inference"), r["day"].isoformat()]
            + ([r["user__username"]] if with_user else [])
            + [r["model"], r["calls"], r["errors"], r["prompt_tokens"], r["completion_tokens"], r["tokens"], r["cost"]]
        )
    for t in report["tasks"]:
        writer.writerow(
            [_("Training"), timezone.localtime(t["finished_at"]).date().isoformat()]
            + ([t["owner__username"]] if with_user else [])
            + [t["fine_tuned_model"], "", "", "", "", t["trained_tokens"] or 0, t["actual_cost"] or 0]
        )
    totals = report["totals"]
    writer.writerow(
        [_("Total"), f"{report['start']}..{report['end']}"]
        + ([""] if with_user else [])
        + [
            "",
            totals["calls"],
            totals["errors"],
            totals["prompt_tokens"],
            totals["completion_tokens"],
            totals["tokens"] + totals["training_tokens"],
            totals["cost"],
        ]
    )
