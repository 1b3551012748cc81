from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Modality(models.TextChoices):
    TEXT = "text", _("Text generation")
    IMAGE_GENERATION = "image_generation", _("Image generation")
    IMAGE_UNDERSTANDING = "image_understanding", _("Image understanding")


class WeightsSource(models.TextChoices):
    LOCAL_DIR = "local_dir", _("Local folder")
    HF_CACHE = "hf_cache", _("Hugging Face repo id in the local cache")
    GGUF_PACKAGE = "gguf_package", _("GGUF file shipped by a Python package")


class Availability(models.TextChoices):
    EVERYONE = "everyone", _("All users")
    ANNUAL_PRIVATE = "annual_private", _("Annual private-deployment plan users")


class BaseModelQuerySet(models.QuerySet):
    def usable_by(self, user) -> BaseModelQuerySet:
        """The catalog entries ``user`` may see, try and fine-tune."""
        qs = self.filter(is_active=True)
        if not getattr(user, "is_staff", False):
            qs = qs.filter(availability=Availability.EVERYONE)
        return qs

    def with_weights(self) -> BaseModelQuerySet:
        """Those whose weights are on this server (a look at the disk, made here)."""
        return self.filter(pk__in=[model.pk for model in self if model.weights_present])


class BaseModel(models.Model):
    """A base model in the catalog ("model square"), managed by operators."""

    code = models.SlugField(_("model code"), max_length=64, unique=True)
    display_name = models.CharField(_("display name"), max_length=100)
    family = models.CharField(_("family"), max_length=50)
    description = models.TextField(_("description"), blank=True)
    modality = models.CharField(_("modality"), max_length=32, choices=Modality.choices, default=Modality.TEXT)
    methods = models.JSONField(_("methods"), default=list, help_text=_('e.g. ["sft", "dpo"]'))
    training_types = models.JSONField(_("training types"), default=list, help_text=_('e.g. ["lora", "full"]'))
    public_pool = models.BooleanField(_("LoRA results may use the public pool"), default=False)
    availability = models.CharField(
        _("who may use it"), max_length=32, choices=Availability.choices, default=Availability.EVERYONE
    )
    context_length = models.PositiveIntegerField(_("context length"), default=2048)
    training_price = models.DecimalField(
        _("training price per 1,000 tokens"), max_digits=10, decimal_places=4, default=0
    )
    inference_price = models.DecimalField(
        _("inference price per 1,000 tokens"), max_digits=10, decimal_places=4, default=0
    )
    weights_source = models.CharField(
        _("weights come from"), max_length=32, choices=WeightsSource.choices, default=WeightsSource.LOCAL_DIR
    )
    weights_location = models.CharField(
        _("weights location"),
        max_length=500,
        blank=True,
        help_text=_(
            "A folder path; a Hugging Face repo id (org/name); or package:file.gguf for a GGUF "
            "file inside an installed Python package."
        ),
    )
    is_default = models.BooleanField(_("embedded default"), default=False)
    is_active = models.BooleanField(_("listed"), default=True)
    sort_order = models.PositiveIntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BaseModelQuerySet.as_manager()

    class Meta:
        ordering = ["sort_order", "code"]
        verbose_name = _("base model")
        verbose_name_plural = _("base models")

    def __str__(self) -> str:
        return self.code

    @property
    def converted_dir(self) -> Path:
        """Where a GGUF model is saved once as safetensors, to load quickly afterwards."""
        return Path(settings.MODELS_DIR) / self.code

    def weights_status(self) -> tuple[bool, str]:
        """Whether the weights are on this server, and where (or why not)."""
        location = self.weights_location.strip()
        if not location:
            return False, str(_("No weights configured on this server."))
        if self.weights_source == WeightsSource.LOCAL_DIR:
            path = Path(location)
            if (path / "config.json").exists():
                return True, str(path)
            return False, str(_("Folder %(path)s has no model in it.") % {"path": path})
        if self.weights_source == WeightsSource.HF_CACHE:
            hub = Path(
                os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub"
            )
            repo_dir = hub.expanduser() / ("models--" + location.replace("/", "--"))
            if any(repo_dir.glob("snapshots/*/config.json")):
                return True, str(repo_dir)
            return False, str(_("%(repo)s is not in the local Hugging Face cache.") % {"repo": location})
        # GGUF shipped by a package: "package:file.gguf"
        package, _sep, filename = location.partition(":")
        if (self.converted_dir / "config.json").exists():
            return True, str(self.converted_dir)
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec and spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                if (Path(folder) / filename).exists():
                    return True, str(Path(folder) / filename)
        return False, str(
            _("Package %(package)s with %(file)s is not installed.") % {"package": package, "file": filename}
        )

    @property
    def weights_present(self) -> bool:
        return self.weights_status()[0]


def _public_id(prefix: str) -> str:
    import secrets

    return f"{prefix}-{secrets.token_hex(10)}"


def new_job_id() -> str:
    return _public_id("ftjob")


class Method(models.TextChoices):
    SFT = "sft", "SFT"
    DPO = "dpo", "DPO"


class TrainingType(models.TextChoices):
    LORA = "lora", "LoRA"
    FULL = "full", _("Full-parameter")


class JobStatus(models.TextChoices):
    VALIDATING_FILES = "validating_files", _("Validating files")
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


FINAL_STATUSES = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


class FineTuningJobQuerySet(models.QuerySet):
    def owned_by(self, user) -> FineTuningJobQuerySet:
        return self.filter(owner=user)

    def active(self) -> FineTuningJobQuerySet:
        return self.exclude(status__in=FINAL_STATUSES)


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
    output_dir = models.CharField(max_length=500, blank=True)
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


class Checkpoint(models.Model):
    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="checkpoints")
    epoch = models.PositiveIntegerField()
    step = models.PositiveIntegerField(default=0)
    path = models.CharField(max_length=500)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["epoch"]
        constraints = [models.UniqueConstraint(fields=["job", "epoch"], name="one_checkpoint_per_epoch")]

    def __str__(self) -> str:
        return f"{self.job_id} epoch {self.epoch}"


class FineTunedModel(models.Model):
    """The model card record of a finished task (its page comes with the model square)."""

    code = models.CharField(_("model code"), max_length=128, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="fine_tuned_models")
    job = models.OneToOneField(FineTuningJob, on_delete=models.PROTECT, related_name="result")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="fine_tunes")
    method = models.CharField(max_length=8, choices=Method.choices)
    training_type = models.CharField(max_length=8, choices=TrainingType.choices)
    hyperparameters = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    trained_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    path = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("fine-tuned model")
        verbose_name_plural = _("fine-tuned models")

    def __str__(self) -> str:
        return self.code
