"""What an evaluation looks like in a webhook's ``data`` (registered with notifications.webhooks)."""

from __future__ import annotations

from .models import Evaluation


def evaluation_json(evaluation: Evaluation) -> dict:
    summary = evaluation.summary or {}
    return {
        "id": f"eval-{evaluation.pk}",
        "object": "fine_tuning.evaluation",
        "model": evaluation.model.code,
        "fine_tuning_job": evaluation.job.public_id,
        "status": evaluation.status,
        # Every prompt asked; the scores and the verdict's n are the task's own (docs/webhooks.md).
        "prompts": evaluation.total,
        "task_prompts": evaluation.task_prompts,
        "general_prompts": evaluation.general_prompts,
        "judge_model": evaluation.judge_model or None,
        "verdict": summary.get("verdict"),
        "models": summary.get("models", []),
        "best_model": summary.get("best"),
        "created_at": int(evaluation.created_at.timestamp()),
        "finished_at": int(evaluation.finished_at.timestamp()) if evaluation.finished_at else None,
    }


def webhook_evaluation(code: str) -> dict:
    """The evaluation ``eval-<id>``."""
    evaluation = Evaluation.objects.select_related("model", "job").get(pk=int(code.removeprefix("eval-")))
    return evaluation_json(evaluation)
