"""What a fine-tuning task looks like in a webhook's ``data`` (registered with notifications.webhooks)."""

from __future__ import annotations

from .api import checkpoint_json, job_json
from .models import Checkpoint, FineTuningJob


def webhook_job(public_id: str) -> dict:
    """The task as the jobs API shows it."""
    job = FineTuningJob.objects.select_related("base_model", "training_dataset", "validation_dataset").get(
        public_id=public_id
    )
    return job_json(job)


def webhook_checkpoint(code: str) -> dict:
    """The checkpoint ``ftckpt-<id>`` as ``checkpoints.list`` shows it."""
    checkpoint = Checkpoint.objects.select_related("job").get(pk=int(code.removeprefix("ftckpt-")))
    return checkpoint_json(checkpoint, checkpoint.job)
