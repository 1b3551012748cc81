"""Celery tasks for notifications: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="notifications.send", acks_late=True, ignore_result=True, soft_time_limit=120, time_limit=150)
def send_message(message_id: int) -> str:
    """Send one outbox message; a transient failure is tried again after its backoff."""
    outcome, delay = services.outbox_send(message_id=message_id)
    if outcome == "retry":
        services.enqueue([message_id], countdown=delay + 0.5)  # not before it is due
    return outcome


@shared_task(name="notifications.repair", ignore_result=True)
def repair() -> dict:
    """Beat: queue pending messages whose Celery message was lost; recover those of dead workers."""
    return services.outbox_repair()
