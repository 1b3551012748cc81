"""Evaluations of finished fine-tuning tasks: held-back prompts answered by the base model, each checkpoint and the
result, scored against the reference (and by a judge model), and general prompts to catch forgetting."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from datasets.models import Dataset
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
    CANCELLED = "cancelled", _("Cancelled")


ACTIVE_STATUSES = (EvaluationStatus.QUEUED, EvaluationStatus.RUNNING)


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
    # The judge: a model code the owner may call, and the rubric it is given (blank: no judge).
    judge_model = models.CharField(_("judge model"), max_length=128, blank=True)
    rubric = models.TextField(_("rubric"), blank=True)
    # General prompts to catch forgetting: "default" (the set shipped in experience/regression/), "none", or one
    # of the owner's datasets.
    regression = models.CharField(_("regression set"), max_length=16, default="default")
    regression_dataset = models.ForeignKey(Dataset, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    regression_source = models.CharField(max_length=200, blank=True)
    # What was evaluated: [{"code", "role": base|checkpoint|result, "step"}], in order.
    evaluated = models.JSONField(default=list, blank=True)
    # The figures and the verdict, computed when it finished (experience.verdict).
    summary = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("evaluation")
        verbose_name_plural = _("evaluations")

    def __str__(self) -> str:
        return f"{self.model.code} #{self.pk}"

    @property
    def is_final(self) -> bool:
        return self.status not in ACTIVE_STATUSES

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    @property
    def general_prompts(self) -> int:
        """The general prompts (the regression set, to catch forgetting), counted apart in the summary."""
        return (self.summary or {}).get("general", 0)

    @property
    def task_prompts(self) -> int:
        """The task's own prompts, those its scores are computed on: ``total`` counts the general prompts too."""
        return self.total - self.general_prompts

    @property
    def too_few_prompts(self) -> bool:
        """Scored on fewer prompts than EVAL_MIN_PROMPTS: one answer moves the score too much to mean anything."""
        return self.task_prompts < EVAL_MIN_PROMPTS


class EvaluationItem(models.Model):
    """One prompt and its reference answer; its answers are EvaluationAnswer rows, one per model. (The base_* and
    tune_* columns are those of evaluations made before answers had rows of their own, moved into rows.)"""

    class Kind(models.TextChoices):
        TASK = "task", _("task prompt")
        GENERAL = "general", _("general prompt")

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
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TASK)
    # The judge's pairwise result of the fine-tune against the base (win, loss, tie; blank: not judged) and its
    # two replies (the fine-tune as answer A, then as answer B).
    pair = models.CharField(max_length=8, blank=True)
    pair_replies = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["evaluation", "index"]
        constraints = [models.UniqueConstraint(fields=["evaluation", "index"], name="evaluation_item_index")]

    def __str__(self) -> str:
        return f"{self.evaluation_id}:{self.index}"

    @property
    def prompt(self) -> str:
        users = [m.get("content") for m in self.messages if m.get("role") == "user"]
        return str(users[-1]) if users else ""


class EvaluationAnswer(models.Model):
    """One model's answer to one prompt, its scores against the reference and the judge's score (1 to 10)."""

    item = models.ForeignKey(EvaluationItem, on_delete=models.CASCADE, related_name="answers")
    code = models.CharField(max_length=128)
    role = models.CharField(max_length=12)  # base, checkpoint, result
    answer = models.TextField(blank=True)
    exact = models.FloatField(default=0)
    f1 = models.FloatField(default=0)
    judge_score = models.FloatField(null=True, blank=True)
    judge_reply = models.TextField(blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["item", "id"]
        constraints = [models.UniqueConstraint(fields=["item", "code"], name="evaluation_answer_model")]

    def __str__(self) -> str:
        return f"{self.item}:{self.code}"


class UsageRecord(ApiCall):
    """The operator's usage view in the admin (every user's calls, aggregated): a proxy of the gateway's records."""

    class Meta:
        proxy = True
        verbose_name = _("usage")
        verbose_name_plural = _("usage (all users)")
