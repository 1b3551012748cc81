"""The fine-tuning jobs API, as both SDKs call it: ``zhipuai``'s and ``openai``'s ``client.fine_tuning.jobs.*``.

A create takes ``method`` either as the zhipuai SDK sends it (``"sft"`` or ``"dpo"``, hyperparameters at the top
level) or in OpenAI's shape (``{"type": "supervised" | "dpo", "<type>": {"hyperparameters": {...}}}``);
``training_type`` (lora or full) is our extension either way. The job object is OpenAI's ``fine_tuning.job``
(``method`` an object, ``seed``, ``metadata``, ``organization_id``, ``estimated_finish``, ``integrations``) plus
our own fields (``training_type``, ``request_id``, ``estimated_cost``, the queue's place).
"""

from __future__ import annotations

import time

from django.http import HttpRequest, JsonResponse
from django.urls import path

from accounts.api import api_view
from common.api import ApiError, cursor_page, page_limit, parse_json_body
from common.error_codes import BAD_PARAM

from . import services, states
from .models import BaseModel, Checkpoint, FineTuningJob, JobEvent, JobStatus, Method

# OpenAI's method types and ours.
OPENAI_METHODS = {"supervised": Method.SFT, "dpo": Method.DPO}
METHOD_TYPES = {ours: theirs for theirs, ours in OPENAI_METHODS.items()}
HYPERPARAMETER_NAMES = ("n_epochs", "batch_size", "learning_rate_multiplier")


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def method_json(job: FineTuningJob) -> dict:
    """The task's method in OpenAI's shape, with the hyperparameters it trains with."""
    hp = job.resolved_hyperparameters or {}
    values = {k: hp.get(k) for k in HYPERPARAMETER_NAMES}
    if job.method == Method.DPO:
        values["beta"] = hp.get("beta", services.DPO_BETA)
    kind = METHOD_TYPES.get(job.method, "supervised")
    return {"type": kind, kind: {"hyperparameters": values}}


def job_json(job: FineTuningJob) -> dict:
    hp = job.resolved_hyperparameters or {}
    finish = services.job_estimated_finish(job)
    return {
        "id": job.public_id,
        "object": "fine_tuning.job",
        "model": job.base_model.code,
        "created_at": _ts(job.created_at),
        "finished_at": _ts(job.finished_at),
        "status": job.status,
        "error": {"code": job.error_code, "message": job.error_message, "param": job.error_param or None}
        if job.error_code
        else None,
        "fine_tuned_model": job.fine_tuned_model if job.status == JobStatus.SUCCEEDED else None,
        "hyperparameters": {k: hp.get(k) for k in HYPERPARAMETER_NAMES},
        "result_files": [],
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_dataset.public_id,
        "validation_file": job.validation_dataset.public_id if job.validation_dataset_id else None,
        # No organisations here: the account that owns the task stands for one.
        "organization_id": f"user-{job.owner_id}",
        "seed": 42 if job.seed is None else job.seed,  # a task from before seeds were recorded trained with 42
        "metadata": job.metadata or None,
        "method": method_json(job),
        "user_provided_suffix": job.suffix or None,
        "estimated_finish": None if finish is None else int(finish),
        "integrations": [],
        "request_id": job.request_id or None,
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
            raise ApiError(400, BAD_PARAM, f"{param} is required.", param)
        return None
    dataset = Dataset.objects.filter(owner=request.user, public_id=str(file_id)).first()
    if dataset is None:
        raise ApiError(400, "file_not_found", f"No file {file_id}.", param)
    return dataset


def _method(body: dict) -> tuple[str, dict]:
    """The method and the requested hyperparameters: ``method`` as the zhipuai SDK sends it (a string, with
    ``hyperparameters`` at the top level) or in OpenAI's shape (the hyperparameters inside it; the deprecated top-level
    ones are taken too, as long as they agree)."""
    hyperparameters = body.get("hyperparameters")
    if hyperparameters is None:
        hyperparameters = {}
    if not isinstance(hyperparameters, dict):
        raise ApiError(400, BAD_PARAM, "hyperparameters must be an object.", "hyperparameters")
    method = body.get("method")
    if method is None or method == "":
        return Method.SFT, hyperparameters
    if isinstance(method, str):  # "sft" or "dpo" (the service says so otherwise); OpenAI's names are taken too
        return OPENAI_METHODS.get(method, method), hyperparameters
    if not isinstance(method, dict):
        raise ApiError(
            400,
            BAD_PARAM,
            'method must be "sft", "dpo" or an object like {"type": "supervised", '
            '"supervised": {"hyperparameters": {...}}}.',
            "method",
        )
    kind = method.get("type")
    if kind == "reinforcement":
        raise ApiError(
            400,
            "unsupported_method",
            "Reinforcement fine-tuning is not available on this server; use supervised or dpo.",
            "method",
        )
    if kind not in OPENAI_METHODS:
        raise ApiError(400, BAD_PARAM, f"method.type must be supervised or dpo, not {str(kind)[:40]!r}.", "method")
    others = sorted(key for key, value in method.items() if key not in ("type", kind) and value is not None)
    if others:
        raise ApiError(400, BAD_PARAM, f"method.{others[0][:40]} does not go with method.type {kind}.", "method")
    section = method.get(kind)
    if section is None:
        section = {}
    if not isinstance(section, dict) or set(section) - {"hyperparameters"}:
        raise ApiError(
            400, BAD_PARAM, f'method.{kind} must be an object like {{"hyperparameters": {{...}}}}.', "method"
        )
    nested = section.get("hyperparameters")
    if nested is None:
        nested = {}
    if not isinstance(nested, dict):
        raise ApiError(400, BAD_PARAM, f"method.{kind}.hyperparameters must be an object.", "method")
    for name, value in nested.items():
        if name in hyperparameters and hyperparameters[name] != value:
            raise ApiError(
                400,
                BAD_PARAM,
                f"hyperparameters.{name} and method.{kind}.hyperparameters.{name} differ; give it once, in method.",
                "hyperparameters",
            )
    return OPENAI_METHODS[kind], {**hyperparameters, **nested}


def _metadata_filter(request: HttpRequest) -> dict[str, str] | None:
    """``?metadata[k]=v`` (every pair must match), or ``?metadata=null``: tasks with no metadata ({}); None: no
    filter."""
    pairs = {
        key[len("metadata[") : -1]: value
        for key, value in request.GET.items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    plain = request.GET.get("metadata")
    if plain is not None:
        if pairs or plain != "null":
            raise ApiError(
                400,
                BAD_PARAM,
                "Filter by metadata with metadata[key]=value, or metadata=null for tasks without metadata (not both).",
                "metadata",
            )
        return {}
    return pairs or None


@api_view(["GET", "POST"])
def jobs(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        qs = _jobs(request)
        wanted = _metadata_filter(request)
        if wanted == {}:
            qs = qs.filter(metadata={})
        elif wanted:
            qs = qs.with_metadata(wanted)
        return cursor_page(request, qs, serialize=job_json, noun="fine-tuning job")
    body = parse_json_body(request)
    code = body.get("model")
    # A catalog entry hidden from this user is answered as chat answers it: as if it did not exist.
    base_model = BaseModel.objects.usable_by(request.user).filter(code=code).first() if isinstance(code, str) else None
    if base_model is None:
        raise ApiError(
            404, "model_not_found", f"The model {code} does not exist or you do not have access to it.", "model"
        )
    method, hyperparameters = _method(body)
    if body.get("integrations"):
        raise ApiError(
            400,
            "unsupported_integration",
            "Integrations (Weights & Biases) are not available on this "
            "server; follow the task's events and metrics instead.",
            "integrations",
        )
    try:
        job, _created = services.job_create(
            user=request.user,
            base_model=base_model,
            training_dataset=_dataset(request, body.get("training_file"), "training_file"),
            validation_dataset=_dataset(request, body.get("validation_file"), "validation_file", required=False),
            method=method,
            training_type=body.get("training_type") or "lora",
            hyperparameters=hyperparameters,
            suffix=body.get("suffix") or "",
            request_id=str(body.get("request_id") or request.headers.get("X-Request-Id") or ""),
            seed=body.get("seed"),
            metadata=body.get("metadata"),
        )
    except services.JobInputError as exc:
        raise ApiError.from_input(exc) from None
    return JsonResponse(job_json(job), json_dumps_params={"ensure_ascii": False})


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
    return JsonResponse(job_json(states.job_cancel(job=_get_job(request, job_id))))


@api_view(["POST"])
def job_pause(request: HttpRequest, job_id: str) -> JsonResponse:
    """openai's ``client.fine_tuning.jobs.pause``: a checkpoint of the step reached, then the worker is free."""
    try:
        return JsonResponse(job_json(states.job_pause(job=_get_job(request, job_id))))
    except states.JobNotPausable as exc:
        raise ApiError(400, "job_not_pausable", str(exc), "fine_tuning_job_id") from None


@api_view(["POST"])
def job_resume(request: HttpRequest, job_id: str) -> JsonResponse:
    """openai's ``client.fine_tuning.jobs.resume``: back in the queue, continuing from the pause's checkpoint."""
    try:
        return JsonResponse(job_json(states.job_resume(job=_get_job(request, job_id))))
    except states.JobNotPausable as exc:
        raise ApiError(400, "job_not_resumable", str(exc), "fine_tuning_job_id") from None


def event_json(event: JobEvent) -> dict:
    return {
        "id": event.public_id,
        "object": "fine_tuning.job.event",
        "type": event.type,
        "created_at": _ts(event.created_at),
        "level": "warn" if event.level == "warning" else event.level,  # OpenAI's levels: info, warn, error
        "message": event.message,
        "data": event.data or None,
    }


def _id_page(request: HttpRequest, qs, *, prefix: str, serialize) -> JsonResponse:
    """Newest first (by row id); ``after`` is an item's id (``<prefix><row id>``) and pages towards older ones."""
    qs = qs.order_by("-id")
    after = request.GET.get("after")
    if after:
        try:
            qs = qs.filter(id__lt=int(str(after).removeprefix(prefix)))
        except ValueError:
            raise ApiError(400, BAD_PARAM, f"Bad id {after[:80]}: expected {prefix}<number>.", "after") from None
    limit = page_limit(request)
    items = list(qs[: limit + 1])
    return JsonResponse(
        {"object": "list", "data": [serialize(item) for item in items[:limit]], "has_more": len(items) > limit},
        json_dumps_params={"ensure_ascii": False},
    )


@api_view(["GET"])
def job_events(request: HttpRequest, job_id: str) -> JsonResponse:
    found = _get_job(request, job_id)
    return _id_page(request, JobEvent.objects.filter(job=found), prefix="ftevent-", serialize=event_json)


def checkpoint_json(checkpoint: Checkpoint, job: FineTuningJob) -> dict:
    """OpenAI's ``fine_tuning.job.checkpoint``: the weights at the end of an epoch, named
    ``<fine-tuned model code>:ckpt-step-<N>``, with the losses logged when they were saved."""
    metrics = checkpoint.metrics or {}
    step = checkpoint.step or metrics.get("current_steps") or 0
    eval_loss = metrics.get("eval_loss")
    return {
        "id": f"ftckpt-{checkpoint.pk}",
        "object": "fine_tuning.job.checkpoint",
        "created_at": _ts(checkpoint.created_at),
        "fine_tuned_model_checkpoint": f"{job.fine_tuned_model}:ckpt-step-{step}",
        "fine_tuning_job_id": job.public_id,
        "step_number": step,
        # The training loss averaged over the steps since the last report; the validation loss over the whole
        # validation set (the engine evaluates all of it at each epoch's end).
        "metrics": {
            "step": step,
            "train_loss": metrics.get("loss"),
            "valid_loss": eval_loss,
            "full_valid_loss": eval_loss,
        },
        "epoch": checkpoint.epoch,
    }


@api_view(["GET"])
def job_checkpoints(request: HttpRequest, job_id: str) -> JsonResponse:
    """The task's epoch checkpoints, newest first (``client.fine_tuning.jobs.checkpoints.list``)."""
    found = _get_job(request, job_id)
    return _id_page(
        request,
        Checkpoint.objects.filter(job=found).complete(),
        prefix="ftckpt-",
        serialize=lambda checkpoint: checkpoint_json(checkpoint, found),
    )


urlpatterns = [
    path("fine_tuning/jobs", jobs, name="api_jobs"),
    path("fine_tuning/jobs/<str:job_id>", job, name="api_job"),
    path("fine_tuning/jobs/<str:job_id>/cancel", job_cancel, name="api_job_cancel"),
    path("fine_tuning/jobs/<str:job_id>/events", job_events, name="api_job_events"),
    path("fine_tuning/jobs/<str:job_id>/pause", job_pause, name="api_job_pause"),
    path("fine_tuning/jobs/<str:job_id>/resume", job_resume, name="api_job_resume"),
    path("fine_tuning/jobs/<str:job_id>/checkpoints", job_checkpoints, name="api_job_checkpoints"),
]
