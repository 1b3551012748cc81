from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from modelcards.models import BaseModel, FineTunedModel, Method, TrainingType

__all__ = ["BaseModel", "Checkpoint", "FineTuningJob", "JobEvent", "JobStatus", "Method", "TrainingType"]


def _public_id(prefix: str) -> str:
    import secrets

    return f"{prefix}-{secrets.token_hex(10)}"


def new_job_id() -> str:
    return _public_id("ftjob")


SEED_MAX = 2**31 - 1  # what every database's positive integer holds


def new_seed() -> int:
    """A seed for a task created without one: chosen at random, then recorded, so the run can be repeated."""
    import secrets

    return secrets.randbelow(SEED_MAX + 1)


class JobStatus(models.TextChoices):
    VALIDATING_FILES = "validating_files", _("Validating files")
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    PAUSED = "paused", _("Paused")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


FINAL_STATUSES = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


class FineTuningJobQuerySet(models.QuerySet):
    def owned_by(self, user) -> FineTuningJobQuerySet:
        return self.filter(owner=user)

    def active(self) -> FineTuningJobQuerySet:
        return self.exclude(status__in=FINAL_STATUSES)

    def with_metadata(self, pairs: dict[str, str]) -> FineTuningJobQuerySet:
        """Tasks whose metadata has each key with exactly that value (a key read as a literal, on every database)."""
        from django.db.models.fields.json import KeyTransform

        qs = self
        for n, (key, value) in enumerate(pairs.items()):
            qs = qs.alias(**{f"_metadata_{n}": KeyTransform(key, "metadata")}).filter(**{f"_metadata_{n}": value})
        return qs


class FineTuningJob(models.Model):
    """A fine-tuning task: queued, trained by a worker on the training queue, finished."""

    public_id = models.CharField(max_length=40, unique=True, default=new_job_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="fine_tuning_jobs")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="jobs")
    training_dataset = models.ForeignKey(
        "datasets.Dataset", on_delete=models.PROTECT, related_name="jobs", verbose_name=_("training data")
    )
    validation_dataset = models.ForeignKey(
        "datasets.Dataset",
        on_delete=models.PROTECT,
        related_name="validation_jobs",
        null=True,
        blank=True,
        verbose_name=_("validation data"),
    )
    method = models.CharField(_("method"), max_length=8, choices=Method.choices, default=Method.SFT)
    training_type = models.CharField(
        _("training type"), max_length=8, choices=TrainingType.choices, default=TrainingType.LORA
    )
    hyperparameters = models.JSONField(_("requested hyperparameters"), default=dict, blank=True)
    resolved_hyperparameters = models.JSONField(_("hyperparameters"), default=dict, blank=True)
    suffix = models.CharField(_("suffix"), max_length=40, blank=True)
    # The seed of the data split, the weights' initialisation, the data order and dropout: the same data, settings
    # and seed train the same losses and weights on the same machine. Null: a task from before seeds were recorded
    # (it trained with 42 and split its validation set with its own row id).
    seed = models.PositiveIntegerField(_("seed"), null=True, blank=True, default=new_seed)
    # The caller's own key-value pairs (OpenAI's metadata: up to 16, keys up to 64 and values up to 512 characters).
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    fine_tuned_model = models.CharField(_("model code"), max_length=128, unique=True)
    request_id = models.CharField(max_length=128, blank=True)
    status = models.CharField(
        _("status"), max_length=20, choices=JobStatus.choices, default=JobStatus.VALIDATING_FILES, db_index=True
    )
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    error_param = models.CharField(max_length=64, blank=True)
    # Billing: tokens of one epoch of the training data (by the modality's rules) × epochs × price.
    estimated_tokens = models.BigIntegerField(default=0)
    estimated_cost = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    trained_tokens = models.BigIntegerField(null=True, blank=True)
    actual_cost = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    # The latest progress, copied from the newest metrics event for list pages.
    progress = models.JSONField(default=dict, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # A running task saves a checkpoint of the step it reached and stops (jobs.states.job_pause)
    pause_requested_at = models.DateTimeField(null=True, blank=True)
    output_dir = models.CharField(max_length=500, blank=True)
    result = models.OneToOneField(
        FineTunedModel,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="job",
        verbose_name=_("fine-tuned model"),
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_step_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = FineTuningJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("fine-tuning task")
        verbose_name_plural = _("fine-tuning tasks")
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "request_id"], condition=~models.Q(request_id=""), name="job_request_id_once"
            )
        ]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def can_pause(self) -> bool:
        return (
            self.status in (JobStatus.QUEUED, JobStatus.RUNNING)
            and self.pause_requested_at is None
            and self.cancel_requested_at is None
        )

    @property
    def percent(self) -> float:
        total = self.progress.get("total_steps") or 0
        if self.status == JobStatus.SUCCEEDED:
            return 100.0
        return round(100.0 * (self.progress.get("current_steps") or 0) / total, 1) if total else 0.0


class JobEvent(models.Model):
    """One line of a task's event log; metrics events carry the training numbers."""

    class Type(models.TextChoices):
        MESSAGE = "message", _("Message")
        METRICS = "metrics", _("Metrics")

    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True)
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.MESSAGE)
    level = models.CharField(max_length=10, default="info")
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["job", "type", "id"])]

    def __str__(self) -> str:
        return f"{self.job_id}: {self.message[:60]}"

    @property
    def public_id(self) -> str:
        return f"ftevent-{self.pk}"


class CheckpointQuerySet(models.QuerySet):
    def complete(self) -> CheckpointQuerySet:
        """Checkpoints written at an epoch's end (the engine's ``epoch-N`` folders: weights that load as a model);
        a mid-epoch one (``step-N``) only serves a resume and is replaced by the next."""
        return self.filter(path__regex=r"/epoch-[0-9]+$")


class Checkpoint(models.Model):
    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="checkpoints")
    epoch = models.PositiveIntegerField()
    step = models.PositiveIntegerField(default=0)
    path = models.CharField(max_length=500)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The checkpoint's model (``<code>:ckpt-step-<N>``), made when the task succeeds; None while it trains, for a
    # mid-epoch checkpoint, or when its weights were pruned (TRAINING_CHECKPOINTS_KEPT).
    model = models.OneToOneField(
        FineTunedModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="checkpoint"
    )
    pruned_at = models.DateTimeField(null=True, blank=True)

    objects = CheckpointQuerySet.as_manager()

    class Meta:
        ordering = ["epoch"]
        constraints = [models.UniqueConstraint(fields=["job", "epoch"], name="one_checkpoint_per_epoch")]

    def __str__(self) -> str:
        return f"{self.job_id} epoch {self.epoch}"
