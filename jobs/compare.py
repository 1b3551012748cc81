"""Two to five tasks side by side: which tasks were asked for, and the rows of the compare page.

Higher apps add rows (experience: each task's evaluation) from their ``AppConfig.ready()``:
``register_compare_rows(fn)`` where ``fn(jobs)`` returns ``[(label, [cell per job]), …]``, in the order of
``jobs``; a cell is text (or HTML marked safe by the registering app).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from datasets.services import dataset_details

from .models import FineTuningJob, JobEvent

MIN_TASKS, MAX_TASKS = 2, 5
MISSING = "—"

_row_providers: list[Callable] = []


def register_compare_rows(fn: Callable) -> None:
    if fn not in _row_providers:
        _row_providers.append(fn)


@dataclass(frozen=True)
class Row:
    label: str
    cells: list
    differs: bool = False


def _row(label: str, values: list, cells: list | None = None) -> Row:
    """A row that is marked when its values (what is compared, not what is shown) are not all equal."""
    return Row(
        str(label),
        cells if cells is not None else [MISSING if v is None else v for v in values],
        differs=len({repr(v) for v in values}) > 1,
    )


def selected_ids(query) -> list[str]:
    """The task ids of ``?ids=a,b`` and/or ``?id=a&id=b``, in the order given, each once."""
    raw = [part for value in query.getlist("ids") for part in value.split(",")] + query.getlist("id")
    return list(dict.fromkeys(part.strip() for part in raw if part.strip()))


def neighbour(job: FineTuningJob) -> FineTuningJob | None:
    """The task to compare ``job`` with first: the owner's task made just before it, else just after it."""
    others = FineTuningJob.objects.owned_by(job.owner).exclude(pk=job.pk).only("public_id")
    return (
        others.filter(created_at__lte=job.created_at).order_by("-created_at", "-id").first()
        or others.order_by("created_at", "id").first()
    )


def jobs_for_user(user, ids: list[str]) -> tuple[list[FineTuningJob], list[str]]:
    """The user's tasks of ``ids`` in that order, and the ids that are not among the user's tasks."""
    found = {
        job.public_id: job
        for job in FineTuningJob.objects.owned_by(user)
        .filter(public_id__in=ids)
        .select_related("base_model", "training_dataset", "validation_dataset", "result")
    }
    return [found[i] for i in ids if i in found], [i for i in ids if i not in found]


HYPERPARAMETER_LABELS = {
    "n_epochs": gettext_lazy("Epochs"),
    "batch_size": gettext_lazy("Batch size"),
    "learning_rate_multiplier": gettext_lazy("Learning-rate multiplier"),
    "learning_rate": gettext_lazy("Learning rate"),
    "beta": gettext_lazy("beta (DPO)"),
}


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _precisions(jobs: list[FineTuningJob]) -> dict[int, str]:
    """The precision each task trained in, from the engine's event (a task that has not started has none)."""
    events = JobEvent.objects.filter(job__in=jobs, type=JobEvent.Type.MESSAGE, data__has_key="precision")
    return {job_id: data.get("precision") for job_id, data in events.order_by("id").values_list("job_id", "data")}


def setting_rows(jobs: list[FineTuningJob]) -> list[Row]:
    """How each task trains: model, method, hyperparameters, seed, precision."""
    rows = [
        _row(_("Base model"), [j.base_model.code for j in jobs]),
        _row(_("Method"), [j.method for j in jobs], [j.get_method_display() for j in jobs]),
        _row(_("Training type"), [j.training_type for j in jobs], [j.get_training_type_display() for j in jobs]),
    ]
    keys = list(HYPERPARAMETER_LABELS)
    keys += sorted({k for j in jobs for k in j.resolved_hyperparameters} - set(keys))
    for key in keys:
        values = [j.resolved_hyperparameters.get(key) for j in jobs]
        if all(v is None for v in values):
            continue
        label = str(HYPERPARAMETER_LABELS.get(key, key))
        rows.append(_row(label, values, [MISSING if v is None else _number(v) for v in values]))
    # A task from before seeds were recorded trained with 42.
    rows.append(_row(_("Seed"), [42 if j.seed is None else j.seed for j in jobs]))
    precisions = _precisions(jobs)
    values = [precisions.get(j.pk) for j in jobs]
    rows.append(_row(_("Precision"), values, [v or _("not recorded") for v in values]))
    return rows


def _dataset_link(dataset) -> str:
    """Its name, linked, then what tells it apart from a dataset of the same name (as the create form's picker)."""
    return format_html(
        '<a href="{}">{}</a><br><span class="muted small" data-testid="dataset-details">{}</span>',
        reverse("datasets:detail", args=[dataset.public_id]),
        dataset.name,
        " · ".join(dataset_details(dataset)),
    )


def data_rows(jobs: list[FineTuningJob]) -> list[Row]:
    """What each task trains and validates on."""
    train = [j.training_dataset for j in jobs]
    valid = [j.validation_dataset for j in jobs]
    # The task page's msgid, where a template doubles its percent sign.
    automatic = _("automatic 10%% split").replace("%%", "%")
    return [
        _row(_("Training data"), [d.pk for d in train], [_dataset_link(d) for d in train]),
        _row(
            _("Training examples"),
            [d.examples for d in train],
            [MISSING if d.examples is None else number_format(d.examples, force_grouping=True) for d in train],
        ),
        _row(
            _("Training tokens"),
            [d.tokens for d in train],
            [MISSING if d.tokens is None else number_format(d.tokens, force_grouping=True) for d in train],
        ),
        _row(
            _("Validation data"),
            [d.pk if d else None for d in valid],
            [_dataset_link(d) if d else automatic for d in valid],
        ),
    ]


def _duration(job: FineTuningJob) -> str:
    if job.started_at is None:
        return MISSING
    seconds = int(((job.finished_at or timezone.now()) - job.started_at) / timedelta(seconds=1))
    text = f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return text if job.finished_at else _("%(time)s so far") % {"time": text}


def _loss(job: FineTuningJob, final_key: str, metrics: list[dict], key: str) -> str:
    result = getattr(job, "result", None)
    final = (result.metrics or {}).get(final_key) if result is not None else None
    if final is not None:
        return f"{final:.4f}"
    latest = [m[key] for m in metrics if m.get(key) is not None]
    return _("%(loss)s (latest)") % {"loss": f"{latest[-1]:.4f}"} if latest else MISSING


def result_rows(jobs: list[FineTuningJob], metrics: dict[int, list[dict]]) -> list[Row]:
    """Where each task got to; these differ by nature, so they are not marked."""

    def tokens(job):
        n = job.trained_tokens if job.trained_tokens is not None else (job.progress or {}).get("trained_tokens")
        return MISSING if n is None else number_format(n, force_grouping=True)

    def cost(job):
        if job.actual_cost is not None:
            return str(job.actual_cost)
        return _("%(cost)s (estimated)") % {"cost": job.estimated_cost}

    return [
        Row(_("Status"), [j.get_status_display() for j in jobs]),
        Row(_("Final training loss"), [_loss(j, "final_loss", metrics[j.pk], "loss") for j in jobs]),
        Row(_("Final validation loss"), [_loss(j, "final_eval_loss", metrics[j.pk], "eval_loss") for j in jobs]),
        Row(_("Trained tokens"), [tokens(j) for j in jobs]),
        Row(_("Duration"), [_duration(j) for j in jobs]),
        Row(_("Cost"), [cost(j) for j in jobs]),
    ]


def registered_rows(jobs: list[FineTuningJob] | QuerySet) -> list[Row]:
    """The rows higher apps add (the evaluation), not marked: scores differ by nature."""
    rows: list[Row] = []
    for fn in _row_providers:
        for label, cells in fn(jobs) or []:
            rows.append(Row(str(label), [MISSING if c is None else c for c in cells]))
    return rows


def only_differences(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if row.differs]
