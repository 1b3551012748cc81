"""Training data: an uploaded JSONL file, its validation result and its stats."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Category(models.TextChoices):
    CHAT = "chat", _("Text generation: chat")
    FUNCTION_CALL = "function_call", _("Text generation: function call")
    REASONING = "reasoning", _("Text generation: deep thinking")
    DPO = "dpo", _("Text generation: preference alignment (DPO)")
    IMAGE_GENERATION = "image_generation", _("Image generation (single image)")
    IMAGE_UNDERSTANDING = "image_understanding", _("Image understanding (single image)")


class Status(models.TextChoices):
    UPLOADED = "uploaded", _("Uploaded")
    VALIDATING = "validating", _("Validating")
    READY = "ready", _("Ready")
    INVALID = "invalid", _("Invalid")


FINAL_STATUSES = (Status.READY, Status.INVALID)


def _public_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def dataset_upload_to(instance: Dataset, filename: str) -> str:
    return f"datasets/{instance.owner_id}/{instance.public_id}.jsonl"


def report_upload_to(instance: Dataset, filename: str) -> str:
    return f"datasets/{instance.owner_id}/{instance.public_id}.issues.csv"


class DatasetQuerySet(models.QuerySet):
    def owned_by(self, user) -> DatasetQuerySet:
        return self.filter(owner=user)

    def ready_for(self, user, category: str | Iterable[str] | None = None) -> DatasetQuerySet:
        """Datasets of ``user`` that passed validation, of ``category`` (one or several) if given."""
        qs = self.filter(owner=user, status=Status.READY)
        if category is None:
            return qs
        if isinstance(category, str):
            return qs.filter(category=category)
        return qs.filter(category__in=list(category))


class Dataset(models.Model):
    """One uploaded file of training data (the platform's "fine-tuning data")."""

    public_id = models.CharField(_("file id"), max_length=40, unique=True, default=_public_id, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets", verbose_name=_("owner")
    )
    name = models.CharField(_("name"), max_length=200)
    filename = models.CharField(_("file name"), max_length=255)
    purpose = models.CharField(_("purpose"), max_length=32, default="fine-tune")
    category = models.CharField(_("category"), max_length=32, choices=Category.choices, blank=True)
    category_auto = models.BooleanField(
        _("category auto-detected"), default=False, help_text=_("The uploader asked the console to detect it.")
    )
    file = models.FileField(_("file"), upload_to=dataset_upload_to, max_length=300)
    bytes = models.BigIntegerField(_("size in bytes"), default=0)
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True, db_index=True)
    request_id = models.CharField(_("request id"), max_length=128, null=True, blank=True)

    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.UPLOADED)
    status_message = models.TextField(_("status message"), blank=True)
    # status_message's English template and parameters (datasets.messages), shown in the reader's language.
    status_message_args = models.JSONField(null=True, blank=True)
    bytes_read = models.BigIntegerField(_("bytes validated"), default=0)
    heartbeat_at = models.DateTimeField(_("last progress"), null=True, blank=True)
    validation_started_at = models.DateTimeField(null=True, blank=True)
    validated_at = models.DateTimeField(null=True, blank=True)

    base_model = models.ForeignKey(
        "modelcards.BaseModel",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("tokenizer of"),
        help_text=_("Tokens are counted with this base model's tokenizer and chat template."),
    )
    lines = models.PositiveIntegerField(_("lines"), default=0)
    examples = models.PositiveIntegerField(_("examples"), default=0)
    legacy_examples = models.PositiveIntegerField(_("legacy input/target examples"), default=0)
    tokens = models.BigIntegerField(
        _("billable tokens per epoch"),
        null=True,
        blank=True,
        help_text=_("Text tokens, plus 1,024 per generated image or 1,600 per understood image."),
    )
    text_tokens = models.BigIntegerField(_("text tokens"), null=True, blank=True)
    images = models.PositiveIntegerField(_("images"), default=0)
    longest_example_tokens = models.PositiveIntegerField(_("longest example (tokens)"), null=True, blank=True)
    truncated_examples = models.PositiveIntegerField(_("examples longer than the context"), default=0)
    duplicate_lines = models.PositiveIntegerField(_("duplicate lines"), default=0)
    error_count = models.PositiveIntegerField(_("errors"), default=0)
    warning_count = models.PositiveIntegerField(_("warnings"), default=0)
    report = models.FileField(_("full issue report"), upload_to=report_upload_to, max_length=300, blank=True)

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("dataset")
        verbose_name_plural = _("datasets")
        indexes = [models.Index(fields=["owner", "-created_at"], name="dataset_owner_created")]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "request_id"],
                condition=models.Q(request_id__isnull=False),
                name="dataset_unique_request_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def status_text(self) -> str:
        """The status message in the active language (as stored where no template was kept)."""
        from .messages import render

        return render(self.status_message_args, self.status_message)

    @property
    def progress_percent(self) -> int:
        if self.status in FINAL_STATUSES:
            return 100
        if not self.bytes:
            return 0
        return min(100, int(self.bytes_read * 100 / self.bytes))

    def jobs_using(self) -> list:
        """Fine-tuning tasks that train or validate on this dataset (the jobs app's PROTECT FKs:
        related_name "jobs" for training files, "validation_jobs" for validation files)."""
        found: list = []
        for name in ("jobs", "validation_jobs"):
            related = getattr(self, name, None)
            if related is not None:
                found.extend(job for job in related.all() if job not in found)
        return found

    @property
    def is_used(self) -> bool:
        return any(
            getattr(self, name, None) is not None and getattr(self, name).exists()
            for name in ("jobs", "validation_jobs")
        )

    def api_status(self) -> str:
        """The file status the SDK sees: uploaded, processing, processed or error."""
        return {
            Status.UPLOADED: "uploaded",
            Status.VALIDATING: "processing",
            Status.READY: "processed",
            Status.INVALID: "error",
        }[Status(self.status)]


class Severity(models.TextChoices):
    ERROR = "error", _("Error")
    WARNING = "warning", _("Warning")


class ValidationIssue(models.Model):
    """One of the first problems found in a dataset (the full list is in its report file)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="issues")
    severity = models.CharField(max_length=8, choices=Severity.choices)
    line = models.PositiveIntegerField(null=True, blank=True, help_text=_("1-based; empty for the whole file"))
    path = models.CharField(max_length=200, blank=True)
    code = models.CharField(max_length=40)
    # In English, and in the uploader's language on rows from before ``message_args``: those show it as it is.
    message = models.TextField()
    # The message's English template and parameters (``datasets.messages``), translated when it is shown.
    message_args = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["dataset", "severity", "id"], name="issue_dataset_severity")]

    def __str__(self) -> str:
        return f"{self.severity} line {self.line} {self.path}: {self.message}"

    @property
    def text(self) -> str:
        """The message in the active language (the stored text for rows that kept no template)."""
        from .messages import render

        return render(self.message_args, self.message)


class TokenCount(models.Model):
    """The tokens of a dataset counted with one base model's tokenizer and chat template.

    Validation counts with the dataset's own base model; a task on another base counts again
    (once, cached here), so a task is always estimated and billed with its own model's tokens."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="token_counts")
    base_model = models.ForeignKey("modelcards.BaseModel", on_delete=models.CASCADE, related_name="+")
    tokens = models.BigIntegerField(_("billable tokens per epoch"), null=True, blank=True)
    text_tokens = models.BigIntegerField(_("text tokens"), null=True, blank=True)
    images = models.PositiveIntegerField(_("images"), default=0)
    longest_example_tokens = models.PositiveIntegerField(null=True, blank=True)
    truncated_examples = models.PositiveIntegerField(default=0)
    error = models.TextField(_("why not counted"), blank=True)
    invalid = models.BooleanField(_("the file did not validate"), default=False)
    counted_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "base_model"], name="one_count_per_base")]

    def __str__(self) -> str:
        return f"{self.dataset_id} / {self.base_model_id}: {self.tokens}"

    @property
    def counted(self) -> bool:
        return self.tokens is not None
