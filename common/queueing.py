"""Queueing Celery work: the one way a service sends a task, now or once its transaction commits.

A task is sent after the rows it reads are committed (``enqueue_on_commit``), so a worker never looks for a row
that is not there yet. Sending never fails the caller: when the broker is away the message is logged and dropped,
and the row it was about stays in the state each app's periodic repair looks for (a task validating its files,
a queued task, an uploaded dataset, a queued evaluation, an unsent outbox message, a deployment to reconcile) and
is sent again from there. Where nothing repairs it, ``on_failure`` records the failure instead (a merged export
says no worker could be reached).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

logger = logging.getLogger(__name__)


def _task(task):
    if isinstance(task, str):  # by name: no import of the app's tasks module (which imports its services)
        from celery import current_app

        if task not in current_app.tasks:  # the apps' tasks modules are imported on first need
            current_app.loader.import_default_modules()
        return current_app.tasks[task]
    return task


def enqueue(
    task,
    *args,
    queue: str | None = None,
    countdown: float | None = None,
    on_failure: Callable[[Exception], None] | None = None,
) -> bool:
    """Send ``task`` (a Celery task or its registered name) with ``args`` now; False if the broker could not be
    reached (logged; ``on_failure`` is called with the error)."""
    task = _task(task)
    options: dict = {}
    if queue:
        options["queue"] = queue
    if countdown:
        options["countdown"] = countdown
    try:
        task.apply_async(args=list(args), **options)
    except Exception as exc:  # noqa: BLE001 - the broker is away: the row stays for the repair (or on_failure)
        logger.warning(
            "could not queue %s%r (%s: %s)%s",
            task.name,
            tuple(args),
            type(exc).__name__,
            exc,
            "" if on_failure else "; the periodic repair sends it again",
        )
        if on_failure is not None:
            on_failure(exc)
        return False
    return True


def enqueue_on_commit(
    task,
    *args,
    queue: str | None = None,
    countdown: float | None = None,
    on_failure: Callable[[Exception], None] | None = None,
) -> None:
    """``enqueue`` once the current transaction commits (at once outside one); never raises for the broker."""
    transaction.on_commit(lambda: enqueue(task, *args, queue=queue, countdown=countdown, on_failure=on_failure))
