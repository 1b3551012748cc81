from __future__ import annotations

from celery import shared_task

from .models import Evaluation


@shared_task(name="experience.evaluate", acks_late=True, time_limit=4 * 3600, soft_time_limit=4 * 3600 - 100)
def evaluate(evaluation_id: int) -> str:
    from . import services

    evaluation = Evaluation.objects.filter(pk=evaluation_id).select_related("job__owner", "model__base_model").first()
    if evaluation is None:
        return "gone"
    return services.evaluation_run(evaluation=evaluation)


@shared_task(name="experience.repair")
def repair() -> dict:
    """Periodic: evaluations whose worker stopped are queued again once, then failed with the reason."""
    from . import services

    return services.evaluations_repair()
