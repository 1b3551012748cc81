"""The fine-tuning jobs API, as the zhipuai SDK calls it (client.fine_tuning.jobs.*)."""

from __future__ import annotations

import time

from django.http import HttpRequest, JsonResponse
from django.urls import path

from console.api import ApiError, api_view, cursor_page, page_limit, parse_json_body

from . import services
from .models import BaseModel, FineTuningJob, JobEvent


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def job_json(job: FineTuningJob) -> dict:
    hp = job.resolved_hyperparameters or {}
    return {
        "id": job.public_id,
        "object": "fine_tuning.job",
        "model": job.base_model.code,
        "created_at": _ts(job.created_at),
        "finished_at": _ts(job.finished_at),
        "status": job.status,
        "error": {"code": job.error_code, "message": job.error_message, "param": job.error_param or None}
        if job.error_code else None,
        "fine_tuned_model": job.fine_tuned_model if job.status == "succeeded" else None,
        "hyperparameters": {k: hp.get(k) for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
        "result_files": [],
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_dataset.public_id,
        "validation_file": job.validation_dataset.public_id if job.validation_dataset_id else None,
        "request_id": job.request_id or None,
        "method": job.method,
        "training_type": job.training_type,
        "estimated_cost": str(job.estimated_cost),
        **_queue(job),
    }


def _queue(job: FineTuningJob) -> dict:
    """A queued task's place: ``queue_position`` (1: next) and ``estimated_start_at`` (unix seconds, null while
    there is nothing to go by)."""
    estimate = services.queue_estimate(job)
    if estimate is None:
        return {"queue_position": None, "estimated_start_at": None}
    seconds = estimate["starts_in_seconds"]
    return {
        "queue_position": estimate["position"],
        "estimated_start_at": None if seconds is None else int(time.time() + seconds),
    }


def _jobs(request):
    return FineTuningJob.objects.owned_by(request.user).select_related(
        "base_model", "training_dataset", "validation_dataset"
    )


def _get_job(request, job_id: str) -> FineTuningJob:
    job = _jobs(request).filter(public_id=job_id).first()
    if job is None:
        raise ApiError(404, "404", f"No fine-tuning job {job_id}.", "fine_tuning_job_id")
    return job


def _dataset(request, file_id, param: str, required: bool = True):
    from datasets.models import Dataset

    if not file_id:
        if required:
            raise ApiError(400, "1214", f"{param} is required.", param)
        return None
    dataset = Dataset.objects.filter(owner=request.user, public_id=str(file_id)).first()
    if dataset is None:
        raise ApiError(400, "file_not_found", f"No file {file_id}.", param)
    return dataset


@api_view(["GET", "POST"])
def jobs(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return cursor_page(request, _jobs(request), serialize=job_json, noun="fine-tuning job")
    body = parse_json_body(request)
    code = body.get("model")
    # A catalog entry hidden from this user is answered as chat answers it: as if it did not exist.
    base_model = BaseModel.objects.usable_by(request.user).filter(code=code).first() if isinstance(code, str) else None
    if base_model is None:
        raise ApiError(404, "model_not_found", f"The model {code} does not exist or you do not have access to it.",
                       "model")
    hyperparameters = body.get("hyperparameters") or {}
    if not isinstance(hyperparameters, dict):
        raise ApiError(400, "1214", "hyperparameters must be an object.", "hyperparameters")
    try:
        job, _created = services.job_create(
            user=request.user,
            base_model=base_model,
            training_dataset=_dataset(request, body.get("training_file"), "training_file"),
            validation_dataset=_dataset(request, body.get("validation_file"), "validation_file", required=False),
            method=body.get("method") or "sft",
            training_type=body.get("training_type") or "lora",
            hyperparameters=hyperparameters,
            suffix=body.get("suffix") or "",
            request_id=str(body.get("request_id") or request.headers.get("X-Request-Id") or ""),
        )
    except services.JobInputError as exc:
        raise ApiError(400, exc.code, exc.message, exc.param) from None
    return JsonResponse(job_json(job))


@api_view(["GET", "DELETE"])
def job(request: HttpRequest, job_id: str) -> JsonResponse:
    found = _get_job(request, job_id)
    if request.method == "DELETE":
        try:
            services.job_delete(job=found)
        except services.JobNotDeletable as exc:
            raise ApiError(400, "job_not_deletable", str(exc), "fine_tuning_job_id") from None
        return JsonResponse({"id": job_id, "object": "fine_tuning.job", "deleted": True})
    return JsonResponse(job_json(found))


@api_view(["POST"])
def job_cancel(request: HttpRequest, job_id: str) -> JsonResponse:
    return JsonResponse(job_json(services.job_cancel(job=_get_job(request, job_id))))


def event_json(event: JobEvent) -> dict:
    return {
        "id": event.public_id,
        "object": "fine_tuning.job.event",
        "type": event.type,
        "created_at": _ts(event.created_at),
        "level": event.level,
        "message": event.message,
        "data": event.data or None,
    }


@api_view(["GET"])
def job_events(request: HttpRequest, job_id: str) -> JsonResponse:
    """Newest first; ``after`` is an event id and pages towards older events."""
    found = _get_job(request, job_id)
    qs = JobEvent.objects.filter(job=found).order_by("-id")
    after = request.GET.get("after")
    if after:
        try:
            qs = qs.filter(id__lt=int(str(after).removeprefix("ftevent-")))
        except ValueError:
            raise ApiError(400, "1214", f"Bad event id {after}.", "after") from None
    limit = page_limit(request)
    items = list(qs[: limit + 1])
    return JsonResponse({"object": "list", "data": [event_json(e) for e in items[:limit]],
                         "has_more": len(items) > limit})


urlpatterns = [
    path("fine_tuning/jobs", jobs, name="api_jobs"),
    path("fine_tuning/jobs/<str:job_id>", job, name="api_job"),
    path("fine_tuning/jobs/<str:job_id>/cancel", job_cancel, name="api_job_cancel"),
    path("fine_tuning/jobs/<str:job_id>/events", job_events, name="api_job_events"),
]
