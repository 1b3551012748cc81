"""Celery tasks of the datasets app: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(
    name="datasets.validate_dataset",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=60 * 60 * 2,
    time_limit=60 * 60 * 2 + 60,
)
def validate_dataset(dataset_id: int) -> None:
    """Validate and count one dataset; a no-op when it is already done or being done.

    Sent to the "default" queue (see ``services.dataset_enqueue_validation``).
    """
    services.dataset_validate(dataset_id=dataset_id)


@shared_task(name="datasets.repair", ignore_result=True)
def repair() -> int:
    """Periodic: re-queue validations whose message was lost or whose worker died."""
    return services.dataset_repair()
