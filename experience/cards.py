"""What experience adds to other apps: the evaluation section of a fine-tuned model's card, and the evaluation
queued when a task succeeds (jobs' ``job_succeeded`` signal)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from django.template.loader import render_to_string

logger = logging.getLogger(__name__)


def on_job_succeeded(sender, job, **kwargs) -> None:
    """Queue the evaluation; never in the way of the task's success (it has committed already)."""
    from .services import evaluation_start

    try:
        evaluation_start(job=job)
    except Exception:
        logger.exception("could not queue the evaluation of %s", job.public_id)


def _rows(items, models: list[dict]) -> list[dict]:
    """Each prompt with its answers in the evaluated models' order (base, checkpoints, result)."""
    order = {m["code"]: i for i, m in enumerate(models)}
    steps = {m["code"]: m.get("step") for m in models}
    rows = []
    for item in items:
        answers = sorted(item.answers.all(), key=lambda a: order.get(a.code, len(order)))
        if not answers and (item.base_answer or item.tune_answer):  # an item of before answers had rows
            answers = [
                SimpleNamespace(
                    role="base",
                    answer=item.base_answer,
                    f1=item.base_f1,
                    exact=item.base_exact,
                    judge_score=None,
                    judge_reply="",
                    error="",
                ),
                SimpleNamespace(
                    role="result",
                    answer=item.tune_answer,
                    f1=item.tune_f1,
                    exact=item.tune_exact,
                    judge_score=None,
                    judge_reply="",
                    error=item.error,
                ),
            ]
        rows.append(
            {
                "item": item,
                "base": next((a for a in answers if a.role == "base"), None),
                "result": next((a for a in answers if a.role == "result"), None),
                "checkpoints": [(steps.get(a.code), a) for a in answers if a.role == "checkpoint"],
            }
        )
    return rows


def evaluation_context(card, request=None, form=None) -> dict | None:
    from common.pagination import paginate
    from jobs.models import FineTuningJob, JobStatus

    from .forms import EvaluationForm
    from .models import EVAL_MIN_PROMPTS, Evaluation, EvaluationItem
    from .services import EVAL_LIMIT, evaluation_summary

    evaluation = Evaluation.objects.filter(model=card).select_related("job").first()
    user = request.user if request is not None else card.owner
    if form is None:
        initial = {}
        if evaluation is not None and evaluation.judge_model:
            initial = {"judge_model": evaluation.judge_model, "rubric": evaluation.rubric}
        if evaluation is not None:
            initial["regression"] = (
                evaluation.regression_dataset.public_id
                if evaluation.regression == "dataset" and evaluation.regression_dataset
                else evaluation.regression
            )
        form = EvaluationForm(user=user, initial=initial)
    if evaluation is None:
        job = FineTuningJob.objects.filter(result=card, status=JobStatus.SUCCEEDED).first()
        if job is None:
            return None
        return {"evaluation": None, "items": [], "card": card, "job": job, "form": form}
    summary = evaluation.summary or {}
    if not summary and evaluation.evaluated:  # running, or made before summaries were kept: from the answers
        summary = evaluation_summary(evaluation=evaluation)
    models = summary.get("models") or [
        {"code": card.base_model.code, "role": "base", "f1": evaluation.base_f1, "exact": evaluation.base_exact},
        {"code": card.code, "role": "result", "f1": evaluation.tune_f1, "exact": evaluation.tune_exact},
    ]
    items = evaluation.items.prefetch_related("answers")
    page = paginate(request, items.filter(kind=EvaluationItem.Kind.TASK), param="eval_page", anchor="#card-evaluation")
    general = list(items.filter(kind=EvaluationItem.Kind.GENERAL))
    task_n = evaluation.total - summary.get("general", 0)  # the general prompts are counted apart
    return {
        "evaluation": evaluation,
        "summary": summary,
        "verdict": summary.get("verdict"),
        "models": models,
        "best": summary.get("best"),
        "pairwise": summary.get("pairwise"),
        "general_pairwise": summary.get("general_pairwise"),
        "task_n": task_n,
        "too_few": task_n < EVAL_MIN_PROMPTS,
        "has_checkpoints": any(m.get("role") == "checkpoint" for m in models),
        "page": page,
        "items": _rows(page.object_list, models),
        "general_items": _rows(general, models),
        "card": card,
        "job": evaluation.job,
        "form": form,
        "min_prompts": EVAL_MIN_PROMPTS,
        "max_prompts": EVAL_LIMIT,
    }


def evaluation_section(request, card) -> str | None:
    from modelcards.models import FineTunedModel

    if not isinstance(card, FineTunedModel) or request.user != card.owner:
        return None
    if card.is_checkpoint:
        return checkpoint_evaluation_section(request, card)
    context = evaluation_context(card, request=request)
    if context is None:
        return None
    return render_to_string("experience/_card_evaluation.html", context, request=request)


def checkpoint_evaluation_section(request, card) -> str:
    """A checkpoint is evaluated with its result (every checkpoint of the task on the same prompts): its line of
    the result's latest evaluation, beside the base's and the result's, and a link to the whole of it."""
    from .models import Evaluation, EvaluationStatus

    evaluation = Evaluation.objects.filter(model=card.checkpoint_of).first()
    summary = (evaluation.summary or {}) if evaluation and evaluation.status == EvaluationStatus.SUCCEEDED else {}
    rows = [m for m in summary.get("models", []) if m.get("role") in ("base", "result") or m.get("code") == card.code]
    return render_to_string(
        "experience/_checkpoint_evaluation.html",
        {
            "card": card,
            "evaluation": evaluation,
            "rows": rows,
            "best": summary.get("best"),
            "verdict": (summary.get("verdict") or {}).get("text"),
        },
        request=request,
    )


def try_action(request, card, place: str) -> dict | None:
    """The Try button of a model (modelcards.cards.register_action): a base model only where it can be served."""
    from urllib.parse import quote

    from django.urls import reverse
    from django.utils.translation import gettext as _

    from modelcards.models import BaseModel

    if card is None or (isinstance(card, BaseModel) and not card.capabilities().serve):
        return None
    return {"label": _("Try"), "url": f"{reverse('playground:index')}?model={quote(card.code)}"}
