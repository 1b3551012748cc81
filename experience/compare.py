"""The evaluation rows of the jobs app's compare page: each task's latest evaluation, side by side."""

from __future__ import annotations

from django.utils.translation import gettext as _

from .models import Evaluation, EvaluationStatus


def _scores(evaluation: Evaluation | None, base: str, tune: str) -> str | None:
    if evaluation is None or getattr(evaluation, tune) is None:
        return None
    return f"{getattr(evaluation, base):.2f} → {getattr(evaluation, tune):.2f}"


def evaluation_rows(jobs) -> list[tuple[str, list]]:
    """Registered with ``jobs.compare.register_compare_rows``: status, prompts, F1 and exact match per task."""
    latest: dict[int, Evaluation] = {}
    for evaluation in Evaluation.objects.filter(job__in=[job.pk for job in jobs]).order_by("-id"):
        latest.setdefault(evaluation.job_id, evaluation)
    found = [latest.get(job.pk) for job in jobs]

    def prompts(e: Evaluation | None) -> str | None:
        if e is None or e.status != EvaluationStatus.SUCCEEDED:
            return None
        n = e.task_prompts  # the scores' own prompts, not the general ones
        return _("%(n)d (too few for the scores to mean much)") % {"n": n} if e.too_few_prompts else str(n)

    def verdict(e: Evaluation | None) -> str | None:
        if e is None or e.status != EvaluationStatus.SUCCEEDED:
            return None
        return ((e.summary or {}).get("verdict") or {}).get("text")

    def best(e: Evaluation | None) -> str | None:
        chosen = (e.summary or {}).get("best") if e is not None and e.status == EvaluationStatus.SUCCEEDED else None
        return (chosen.get("code") if isinstance(chosen, dict) else chosen) or None

    return [
        (_("Evaluation"), [e.get_status_display() if e else _("not evaluated") for e in found]),
        (_("Verdict"), [verdict(e) for e in found]),
        (_("Best of its checkpoints and result"), [best(e) for e in found]),
        (_("Prompts scored"), [prompts(e) for e in found]),
        (_("F1, base → fine-tune"), [_scores(e, "base_f1", "tune_f1") for e in found]),
        (_("Exact match, base → fine-tune"), [_scores(e, "base_exact", "tune_exact") for e in found]),
    ]
