"""Evaluations of finished fine-tuning tasks: held-back prompts answered by the base model and the fine-tune."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from deployments.models import ApiCall
from jobs.models import FineTuningJob
from modelcards.models import FineTunedModel

# Below this many prompts an evaluation's score is shown as not meaningful (one answer swings F1 from 0 to 1).
EVAL_MIN_PROMPTS = 10


class EvaluationStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Finished")
    FAILED = "failed", _("Failed")


class Evaluation(models.Model):
    """One run of a task's evaluation (re-running starts a new one; the card shows the latest)."""

    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="evaluations")
    model = models.ForeignKey(FineTunedModel, on_delete=models.CASCADE, related_name="evaluations")
    status = models.CharField(max_length=12, choices=EvaluationStatus.choices, default=EvaluationStatus.QUEUED)
    source = models.CharField(_("prompts from"), max_length=200, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    base_exact = models.FloatField(null=True, blank=True)
    base_f1 = models.FloatField(null=True, blank=True)
    tune_exact = models.FloatField(null=True, blank=True)
    tune_f1 = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("evaluation")
        verbose_name_plural = _("evaluations")

    def __str__(self) -> str:
        return f"{self.model.code} #{self.pk}"

    @property
    def is_final(self) -> bool:
        return self.status in (EvaluationStatus.SUCCEEDED, EvaluationStatus.FAILED)

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    @property
    def too_few_prompts(self) -> bool:
        """Scored on fewer prompts than EVAL_MIN_PROMPTS: one answer moves the score too much to mean anything."""
        return self.total < EVAL_MIN_PROMPTS


class EvaluationItem(models.Model):
    """One prompt: the reference answer and both models' answers with their scores."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()
    messages = models.JSONField(default=list)
    reference = models.TextField(blank=True)
    base_answer = models.TextField(blank=True)
    tune_answer = models.TextField(blank=True)
    base_exact = models.FloatField(default=0)
    base_f1 = models.FloatField(default=0)
    tune_exact = models.FloatField(default=0)
    tune_f1 = models.FloatField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["evaluation", "index"]
        constraints = [models.UniqueConstraint(fields=["evaluation", "index"], name="evaluation_item_index")]

    def __str__(self) -> str:
        return f"{self.evaluation_id}:{self.index}"

    @property
    def prompt(self) -> str:
        users = [m.get("content") for m in self.messages if m.get("role") == "user"]
        return str(users[-1]) if users else ""


class UsageRecord(ApiCall):
    """The operator's usage view in the admin (every user's calls, aggregated): a proxy of the gateway's records."""

    class Meta:
        proxy = True
        verbose_name = _("usage")
        verbose_name_plural = _("usage (all users)")
