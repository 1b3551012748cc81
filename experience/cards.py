"""What experience adds to other apps: the evaluation section of a fine-tuned model's card, and the evaluation
queued when a task succeeds (jobs' ``job_succeeded`` signal)."""

from __future__ import annotations

import logging

from django.template.loader import render_to_string

logger = logging.getLogger(__name__)


def on_job_succeeded(sender, job, **kwargs) -> None:
    """Queue the evaluation; never in the way of the task's success (it has committed already)."""
    from .services import evaluation_start

    try:
        evaluation_start(job=job)
    except Exception:
        logger.exception("could not queue the evaluation of %s", job.public_id)


def evaluation_context(card) -> dict | None:
    from jobs.models import FineTuningJob, JobStatus

    from .models import EVAL_MIN_PROMPTS, Evaluation
    from .services import EVAL_LIMIT

    evaluation = Evaluation.objects.filter(model=card).select_related("job").first()
    if evaluation is not None:
        return {
            "evaluation": evaluation,
            "items": list(evaluation.items.all()[:50]),
            "card": card,
            "job": evaluation.job,
            "min_prompts": EVAL_MIN_PROMPTS,
            "max_prompts": EVAL_LIMIT,
        }
    job = FineTuningJob.objects.filter(result=card, status=JobStatus.SUCCEEDED).first()
    return {"evaluation": None, "items": [], "card": card, "job": job} if job is not None else None


def evaluation_section(request, card) -> str | None:
    from modelcards.models import FineTunedModel

    if not isinstance(card, FineTunedModel) or request.user != card.owner:
        return None
    context = evaluation_context(card)
    if context is None:
        return None
    return render_to_string("experience/_card_evaluation.html", context, request=request)
