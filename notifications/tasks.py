"""Celery tasks for notifications: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="notifications.send", acks_late=True, ignore_result=True, soft_time_limit=300, time_limit=330)
def send_messages(message_ids: list[int]) -> dict:
    """Send outbox messages (those of one event, usually); a transient failure is tried again after its backoff."""
    results = services.outbox_send_many(message_ids=message_ids)
    for message_id, (outcome, delay) in results.items():
        if outcome == "retry":
            services.enqueue([message_id], countdown=delay + 0.5)  # not before it is due
    return {str(k): v[0] for k, v in results.items()}


@shared_task(name="notifications.repair", ignore_result=True)
def repair() -> dict:
    """Beat: queue pending messages whose Celery message was lost; recover those of dead workers."""
    return services.outbox_repair()
