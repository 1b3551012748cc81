"""Checkpoint models: when a LoRA task succeeds, each epoch's checkpoint becomes a model of its own.

Its code is OpenAI's ``<result code>:ckpt-step-<N>``; it is a ``FineTunedModel`` (``checkpoint_of`` the result),
so calling it, trying it, deploying it, downloading it and exporting it go through the same code as the result.
The newest ``TRAINING_CHECKPOINTS_KEPT`` stay models; older ones' weights are deleted when the task succeeds (their
rows, with the losses, stay listed). A full-parameter task's checkpoints hold only the trained tensors and the
optimizer state (a resume's, not a servable model folder), so they stay rows for ``checkpoints.list``.
"""

from __future__ import annotations

import logging
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common import storage
from modelcards.models import FineTunedModel

from .models import Checkpoint, FineTuningJob

logger = logging.getLogger(__name__)


def checkpoint_step(checkpoint: Checkpoint) -> int:
    return checkpoint.step or (checkpoint.metrics or {}).get("current_steps") or 0


def checkpoint_code(job: FineTuningJob, checkpoint: Checkpoint) -> str:
    """OpenAI's name for a checkpoint's model: the task's model code, ``:ckpt-step-`` and the step."""
    return f"{job.fine_tuned_model}:ckpt-step-{checkpoint_step(checkpoint)}"


def checkpoint_losses(checkpoint: Checkpoint) -> dict:
    """The training loss logged last before it was saved, and the validation loss of that epoch."""
    metrics = checkpoint.metrics or {}
    return {
        "final_loss": metrics.get("loss"),
        "final_eval_loss": metrics.get("eval_loss"),
        "step": checkpoint_step(checkpoint),
        "epoch": checkpoint.epoch,
    }


def checkpoints_publish(*, job: FineTuningJob, card: FineTunedModel) -> list[FineTunedModel]:
    """Inside the transaction that makes ``card`` the task's result: a model for each kept epoch checkpoint of a
    LoRA task, and the weights of the older ones deleted after the commit. Returns the checkpoint models."""
    complete = list(job.checkpoints.complete().filter(pruned_at__isnull=True).order_by("epoch"))
    if not card.is_lora:
        return []
    from .training.engine import STATE_FILE, TRAINABLE_FILE  # the worker has the engine loaded already

    keep = max(0, int(settings.TRAINING_CHECKPOINTS_KEPT))
    pruned = complete[:-keep] if keep and len(complete) > keep else []
    models = []
    for checkpoint in complete:
        if checkpoint in pruned:
            continue
        model, _created = FineTunedModel.objects.update_or_create(
            code=checkpoint_code(job, checkpoint),
            defaults={
                "owner": job.owner,
                "base_model": card.base_model,
                "method": card.method,
                "training_type": card.training_type,
                "hyperparameters": card.hyperparameters,
                "metrics": checkpoint_losses(checkpoint),
                "path": checkpoint.path,
                "checkpoint_of": card,
                "epoch": checkpoint.epoch,
                "step": checkpoint_step(checkpoint),
                "deleted_at": None,
            },
        )
        Checkpoint.objects.filter(pk=checkpoint.pk).update(model=model)
        models.append(model)
    if pruned:
        Checkpoint.objects.filter(pk__in=[c.pk for c in pruned]).update(pruned_at=timezone.now())
        paths = [c.path for c in pruned]
        transaction.on_commit(lambda: _delete_folders(paths))
    # A model's files hold no resume state: the newest checkpoint kept it for a resume, which is over now.
    for checkpoint in complete:
        if checkpoint not in pruned:
            for name in (STATE_FILE, TRAINABLE_FILE):
                transaction.on_commit(partial(_delete_file, f"{checkpoint.path}/{name}"))
    return models


def _delete_folders(paths: list[str]) -> None:
    for path in paths:
        try:
            storage.delete_folder(path)
        except Exception:  # the task has succeeded; a folder left behind is logged, not raised
            logger.exception("could not delete the pruned checkpoint %s", path)


def _delete_file(path: str) -> None:
    try:
        storage.delete_file(path)
    except Exception:
        logger.exception("could not delete %s", path)
