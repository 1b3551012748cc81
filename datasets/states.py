"""The dataset's state machine: every change of ``Dataset.status`` happens here.

    uploaded   → validating (a worker claims it)
    validating → ready | invalid (the worker that holds the claim) | validating (a stale claim taken over)
    ready, invalid, uploaded → uploaded (validate again: the admin action)

Each transition is a compare-and-set (``common.states.StateMachine``) and records what goes with it; an invalid
file's owner is notified. The validation worker (services) and the admin call these functions.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from common.states import StateMachine

from .models import Dataset, Status

S = Status
DATASET = StateMachine(
    Dataset,
    {
        S.UPLOADED: {S.VALIDATING, S.UPLOADED},
        S.VALIDATING: {S.VALIDATING, S.READY, S.INVALID},
        S.READY: {S.UPLOADED},
        S.INVALID: {S.UPLOADED},
    },
)


def dataset_claim(*, dataset_id: int, stale_after) -> bool:
    """uploaded → validating, or a validating one whose worker stopped beating for ``stale_after``: taken over."""
    now = timezone.now()
    claimable = Q(status=S.UPLOADED) | Q(status=S.VALIDATING, heartbeat_at__lt=now - stale_after)
    return bool(
        DATASET.move(
            Dataset.objects.filter(claimable, pk=dataset_id),
            [S.UPLOADED, S.VALIDATING],
            S.VALIDATING,
            bytes_read=0,
            heartbeat_at=now,
            validation_started_at=now,
            status_message="",
            status_message_args=None,
        )
    )


def dataset_validated(*, dataset: Dataset, valid: bool, fields: dict, record) -> bool:
    """validating → ready or invalid, written only by the worker that holds the claim (a deleted dataset stays
    deleted: False). ``record()`` (the issues and token counts) runs in the same transaction; the owner of an
    invalid file is notified."""
    status = S.READY if valid else S.INVALID
    with transaction.atomic():
        if not DATASET.move(dataset, [S.VALIDATING], status, **fields):
            return False
        record()
        if status == S.INVALID:
            from django.urls import reverse

            from notifications.services import notify

            notify(
                user=dataset.owner,
                event="dataset.invalid",
                subject_name=dataset.name,
                subject_code=dataset.public_id,
                url=reverse("datasets:detail", args=[dataset.public_id]),
                context={"errors": fields.get("error_count")},
            )
    return True


def dataset_crashed(*, dataset_id: int, message) -> bool:
    """validating → invalid: the validation stopped on an internal error; ``message`` (a datasets.messages.Message)
    says so."""
    now = timezone.now()
    return bool(
        DATASET.move(
            dataset_id,
            [S.VALIDATING],
            S.INVALID,
            status_message=message.english(),
            status_message_args=message.as_json(),
            heartbeat_at=now,
            validated_at=now,
        )
    )


def datasets_revalidate(*, ids) -> list[int]:
    """ready, invalid or uploaded → uploaded, and a validation message for each (after commit); returns the ids
    moved (one being validated is left alone)."""
    from .services import dataset_enqueue_validation

    with transaction.atomic():
        movable = [S.UPLOADED, S.READY, S.INVALID]
        moved = list(Dataset.objects.filter(id__in=ids, status__in=movable).values_list("id", flat=True))
        DATASET.move(Dataset.objects.filter(id__in=moved), movable, S.UPLOADED, bytes_read=0)
        for pk in moved:
            dataset_enqueue_validation(dataset_id=pk)
    return moved
