from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from common.pagination import paginate
from common.polling import polled
from datasets.conf import max_bytes
from datasets.services import human_bytes
from datasets.uploads import with_upload_limit

from . import charts, compare, services, states
from .forms import JobForm
from .models import FineTuningJob, JobEvent, JobStatus

EVENTS_SHOWN = 100


def _get_job_for_user(request: HttpRequest, public_id: str) -> FineTuningJob:
    return get_object_or_404(
        FineTuningJob.objects.select_related("base_model", "training_dataset", "validation_dataset"),
        public_id=public_id,
        owner=request.user,
    )


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = FineTuningJob.objects.owned_by(request.user).select_related("base_model", "training_dataset")
    q = request.GET.get("q", "").strip()
    if q:
        jobs = jobs.filter(fine_tuned_model__icontains=q) | jobs.filter(public_id__icontains=q)
    status = request.GET.get("status", "")
    if status in JobStatus.values:
        jobs = jobs.filter(status=status)
    page = paginate(request, jobs)
    has_active = any(not job.is_final and job.status != JobStatus.PAUSED for job in page.object_list)
    context = {"page": page, "q": q, "status": status, "statuses": JobStatus.choices, "has_active": has_active}
    if request.htmx and request.GET.get("partial") == "table":
        response = render(request, "jobs/list.html#table", context)
        return polled(response, settled=not has_active)
    return render(request, "jobs/list.html", context)


def _list_url(query) -> str:
    """The task list with the filters and page it was left at."""
    kept = {key: query[key] for key in ("q", "status", "page") if query.get(key)}
    return reverse("jobs:list") + (f"?{urlencode(kept)}" if kept else "")


def _compare_url(ids: list[str], **extra) -> str:
    return reverse("jobs:compare") + "?" + urlencode({"ids": ",".join(ids), **extra})


@login_required
def job_compare(request: HttpRequest) -> HttpResponse:
    """Two to five of the user's tasks side by side: loss curves overlaid, settings with differences marked."""
    ids = compare.selected_ids(request.GET)
    if len(ids) < compare.MIN_TASKS:
        messages.error(request, _("Choose at least two tasks to compare (%(n)d chosen).") % {"n": len(ids)})
        return redirect(_list_url(request.GET))
    if len(ids) > compare.MAX_TASKS:
        messages.error(request, _("Compare at most five tasks at a time (%(n)d chosen).") % {"n": len(ids)})
        return redirect(_list_url(request.GET))
    jobs, unknown = compare.jobs_for_user(request.user, ids)
    if unknown:
        return render(request, "jobs/compare.html", {"unknown": unknown}, status=404)
    metrics = {job.pk: charts.chart_metrics(job) for job in jobs}
    chart = charts.overlay_chart([(job.fine_tuned_model, metrics[job.pk]) for job in jobs])
    only_diff = request.GET.get("only") == "diff"
    settings_rows, data_rows = compare.setting_rows(jobs), compare.data_rows(jobs)
    columns = [
        {
            "job": job,
            "colour": charts.SERIES_COLOURS[n % len(charts.SERIES_COLOURS)],
            "without": _compare_url([i for i in ids if i != job.public_id]) if len(ids) > compare.MIN_TASKS else None,
        }
        for n, job in enumerate(jobs)
    ]
    others = (
        []
        if len(ids) >= compare.MAX_TASKS
        else list(
            FineTuningJob.objects.owned_by(request.user)
            .exclude(public_id__in=ids)
            .only("public_id", "fine_tuned_model", "status")[:50]
        )
    )
    context = {
        "jobs": jobs,
        "columns": columns,
        "chart": chart,
        "ids": ",".join(ids),
        "only_diff": only_diff,
        "settings_rows": compare.only_differences(settings_rows) if only_diff else settings_rows,
        "data_rows": compare.only_differences(data_rows) if only_diff else data_rows,
        "differences": sum(row.differs for row in settings_rows + data_rows),
        "result_rows": compare.result_rows(jobs, metrics),
        "evaluation_rows": compare.registered_rows(jobs),
        "toggle_url": _compare_url(ids) if only_diff else _compare_url(ids, only="diff"),
        "others": others,
    }
    return render(request, "jobs/compare.html", context)


def _form_context(form: JobForm) -> dict:
    capabilities = {}
    for m in form.models_with_weights:
        caps = m.capabilities()
        capabilities[m.code] = {
            "methods": [x for x in m.methods if caps.method(x)],
            "training_types": [t for t in m.training_types if caps.training_type(t)],
        }
    return {"form": form, "models_without_weights": form.models_without_weights, "capabilities": capabilities}


def _too_large(request: HttpRequest) -> HttpResponse:
    message = _("The file is larger than the limit of %(limit)s.") % {"limit": human_bytes(max_bytes())}
    context = {**_form_context(JobForm(user=request.user)), "upload_error": message}
    response = render(request, "jobs/create.html", context, status=413)
    response["Connection"] = "close"
    return response


@login_required
@require_http_methods(["GET", "POST"])
@with_upload_limit(_too_large)
def job_create(request: HttpRequest, handler) -> HttpResponse:
    """The create form; a dataset uploaded in it gets the streaming size limit of the datasets page."""
    initial = {}
    if request.GET.get("model"):
        initial["base_model"] = request.GET["model"]
    if request.GET.get("dataset"):
        initial["training_dataset"] = request.GET["dataset"]
    form = JobForm(request.POST or None, request.FILES or None, user=request.user, initial=initial)
    if handler is not None and handler.too_large:
        return _too_large(request)
    if request.method == "POST" and form.is_valid():
        try:
            job = services.job_create_from_form(
                user=request.user, form=form, sha256=handler.sha256.hexdigest() if handler else ""
            )
        except services.JobInputError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, _("Task %(id)s created.") % {"id": job.public_id})
            return redirect("jobs:detail", public_id=job.public_id)
    return render(request, "jobs/create.html", _form_context(form))


@login_required
@require_POST
def job_estimate(request: HttpRequest) -> HttpResponse:
    """The create form's live estimate: tokens, epochs, unit price, cost, training memory and warnings."""
    form = JobForm(request.POST, user=request.user, full_check=False)
    form.is_valid()  # errors are shown by the form itself; use what is clean
    data = form.cleaned_data
    context: dict = {"estimate": None, "warnings": [], "resolved": None, "error": None}
    hyperparameter_errors = form.hyperparameter_errors()
    if hyperparameter_errors:
        context["error"] = " ".join(hyperparameter_errors)
    base_model, dataset = data.get("base_model"), data.get("training_dataset")
    if base_model is not None:
        context["base_model"] = base_model
        try:
            services.job_check_choices(
                user=request.user,
                base_model=base_model,
                method=data.get("method", "sft"),
                training_type=data.get("training_type", "lora"),
            )
        except services.JobInputError as exc:
            context["error"] = context["error"] or exc.message
    if base_model is not None and dataset is not None and not hyperparameter_errors:
        try:
            resolved = services.hyperparameters_resolve(
                requested=form.hyperparameters(),
                method=data.get("method", "sft"),
                training_type=data.get("training_type", "lora"),
                examples=dataset.examples or 0,
            )
            services.job_check_dataset(
                user=request.user,
                base_model=base_model,
                method=data.get("method", "sft"),
                dataset=dataset,
                param="training_file",
            )
        except services.JobInputError as exc:
            context["error"] = context["error"] or exc.message
        else:
            context["resolved"] = resolved
            context["estimate"] = services.job_estimate(
                base_model=base_model, dataset=dataset, n_epochs=resolved["n_epochs"]
            )
            choice = {"training_type": data.get("training_type", "lora"), "method": data.get("method", "sft")}
            context["memory"] = services.job_memory_estimate(base_model=base_model, dataset=dataset, **choice)
            try:
                services.job_check_memory(base_model=base_model, dataset=dataset, **choice)
            except services.JobInputError as exc:
                context["error"] = context["error"] or exc.message
            context["warnings"] = services.dataset_warnings(base_model=base_model, dataset=dataset)
            from datasets.services import dataset_cached_count

            if dataset_cached_count(dataset=dataset, base_model=base_model) is None:
                context["counted_with"] = dataset.base_model  # counted again with the task's model first
    return render(request, "jobs/create.html#estimate", context)


def _queue(job: FineTuningJob) -> dict | None:
    estimate = services.queue_estimate(job)
    if estimate is not None and estimate["starts_in_seconds"] is not None:
        estimate["starts_at"] = timezone.now() + timedelta(seconds=estimate["starts_in_seconds"])
    return estimate


def _live_context(job: FineTuningJob) -> dict:
    metrics = charts.chart_metrics(job)
    events = list(JobEvent.objects.filter(job=job, type=JobEvent.Type.MESSAGE).order_by("-id")[:EVENTS_SHOWN])
    checkpoints = list(job.checkpoints.all())
    scored = [c for c in checkpoints if (c.metrics or {}).get("eval_loss") is not None]
    best = min(scored, key=lambda c: c.metrics["eval_loss"]) if len(scored) > 1 else None
    return {
        "job": job,
        "queue": _queue(job),
        "chart": charts.loss_chart(metrics),
        "events": events,
        "checkpoints": checkpoints,
        "best_checkpoint": best,
        "result": getattr(job, "result", None) if job.status == JobStatus.SUCCEEDED else None,
    }


@login_required
def job_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    job = _get_job_for_user(request, public_id)
    context = _live_context(job)
    if request.htmx and request.GET.get("partial") == "live":
        # The page's buttons follow the state: the partial carries them as out-of-band swaps.
        response = render(request, "jobs/detail.html#live", {**context, "oob": True})
        settled = job.is_final or job.status == JobStatus.PAUSED
        return polled(response, settled=settled)
    neighbour = compare.neighbour(job)
    context["compare_url"] = _compare_url([job.public_id, neighbour.public_id]) if neighbour else None
    return render(request, "jobs/detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def job_cancel(request: HttpRequest, public_id: str) -> HttpResponse:
    job = _get_job_for_user(request, public_id)
    if request.method == "POST":
        if job.is_final:
            messages.info(request, _("The task had already ended."))
        else:
            states.job_cancel(job=job)
            messages.success(request, _("Cancelling task %(id)s.") % {"id": job.public_id})
        return redirect("jobs:detail", public_id=job.public_id)
    return render(request, "jobs/confirm.html", {"job": job, "action": "cancel"})


@login_required
@require_POST
def job_pause(request: HttpRequest, public_id: str) -> HttpResponse:
    job = _get_job_for_user(request, public_id)
    try:
        job = states.job_pause(job=job)
    except states.JobNotPausable as exc:
        messages.error(request, str(exc))
    else:
        if job.status == JobStatus.PAUSED:
            messages.success(request, _("Task %(id)s is paused.") % {"id": job.public_id})
        else:
            messages.success(
                request, _("Pausing task %(id)s: it saves a checkpoint of the step it reached.") % {"id": job.public_id}
            )
    return redirect("jobs:detail", public_id=job.public_id)


@login_required
@require_POST
def job_resume(request: HttpRequest, public_id: str) -> HttpResponse:
    job = _get_job_for_user(request, public_id)
    try:
        states.job_resume(job=job)
    except states.JobNotPausable as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Task %(id)s is back in the queue.") % {"id": job.public_id})
    return redirect("jobs:detail", public_id=job.public_id)


@login_required
@require_http_methods(["GET", "POST"])
def job_delete(request: HttpRequest, public_id: str) -> HttpResponse:
    job = _get_job_for_user(request, public_id)
    if request.method == "POST":
        try:
            services.job_delete(job=job)
        except services.JobNotDeletable as exc:
            messages.error(request, str(exc))
            return redirect("jobs:detail", public_id=job.public_id)
        messages.success(request, _("Task %(id)s deleted.") % {"id": public_id})
        return redirect("jobs:list")
    return render(request, "jobs/confirm.html", {"job": job, "action": "delete"})
