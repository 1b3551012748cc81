"""Celery tasks for fine-tuning: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="jobs.prepare_job", bind=True, max_retries=None, acks_late=True)
def prepare_job(self, job_id: int) -> str:
    """Queue a task once its files are validated; wait (retry) while they still are."""
    outcome = services.job_prepare(job_id=job_id)
    if outcome == "wait":
        raise self.retry(countdown=2)
    return outcome


@shared_task(name="jobs.train_next", acks_late=True)
def train_next() -> str:
    """Take the oldest queued task and train it in this worker process.

    No time limit: a worker on the training queue has none (console.celery); the heartbeat and the
    stuck-step watch tell whether it is alive."""
    from .runner import job_run, preemptible

    job = services.job_claim_next(worker=services.worker_name())
    if job is None:
        return "idle"
    try:
        with preemptible():
            return job_run(job=job)
    finally:
        from .training.memory import release_memory

        release_memory()  # the worker waits for its next task at its preloaded size


@shared_task(name="jobs.repair")
def repair() -> dict:
    """Beat: requeue tasks of lost workers, re-send lost messages."""
    return services.jobs_repair()
