"""Fine-tuning tasks: create, estimate, queue, run, cancel, repair.

The database is the source of truth. Celery messages only say "look at the
database now": a lost or duplicated message never loses or doubles a job.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.quotas import QuotaExceeded, quota_enforce
from common import storage
from common.error_codes import InputError
from common.queueing import enqueue_on_commit
from datasets.conf import advised_min_examples
from datasets.models import Category as DatasetCategory
from datasets.models import Status as DatasetStatus
from modelcards.models import BaseModel, FineTunedModel, Method, Modality, TrainingType
from modelcards.pricing import token_cost

from . import states
from .models import FINAL_STATUSES, SEED_MAX, FineTuningJob, JobEvent, JobStatus, new_seed
from .states import MAX_ATTEMPTS, job_event, job_fail, job_requeue_stuck

logger = logging.getLogger(__name__)

SUFFIX_RE = re.compile(r"^[a-z0-9_-]{1,40}$")

# Absolute learning rates that a multiplier of 1.0 ("auto") stands for.
BASE_LEARNING_RATE = {
    (Method.SFT, TrainingType.LORA): 1e-3,
    (Method.SFT, TrainingType.FULL): 2e-5,
    (Method.DPO, TrainingType.LORA): 1e-4,
    (Method.DPO, TrainingType.FULL): 5e-6,
}

# Which dataset categories each method and modality trains on.
SFT_TEXT_CATEGORIES = {"chat", "function_call", "reasoning"}
CATEGORIES_FOR = {
    (Method.SFT, Modality.TEXT): SFT_TEXT_CATEGORIES,
    (Method.DPO, Modality.TEXT): {"dpo"},
    (Method.SFT, Modality.IMAGE_GENERATION): {"image_generation"},
    (Method.SFT, Modality.IMAGE_UNDERSTANDING): {"image_understanding"},
}


class JobInputError(InputError):
    """A request to create a task that cannot be honoured; ``param`` names the field."""

    default_code = "invalid_request"


# --- hyperparameters and cost ----------------------------------------------


def _auto(value) -> bool:
    return value is None or value == "" or value == "auto"


# Each hyperparameter's type and allowed range (both ends included); a missing value or "auto" is chosen for you.
HYPERPARAMETER_LIMITS: dict[str, tuple[type, float, float]] = {
    "n_epochs": (int, 1, 50),
    "batch_size": (int, 1, 256),
    "learning_rate_multiplier": (float, 0.01, 10.0),
    "beta": (float, 0.01, 2.0),  # DPO only: how far the policy may move from the reference model
}
DPO_BETA = 0.1  # what "auto" means for beta


def hyperparameters_resolve(*, requested: dict, method: str, training_type: str, examples: int) -> dict:
    """Turn ``auto`` (or missing) values into the numbers training will use."""
    requested = requested or {}
    known = {"n_epochs", "batch_size", "learning_rate_multiplier"} | ({"beta"} if method == Method.DPO else set())
    unknown = set(requested) - known
    if unknown:
        name = sorted(unknown)[0]
        if name == "beta":
            raise JobInputError(_("beta is a hyperparameter of DPO only."), "hyperparameters")
        raise JobInputError(_("Unknown hyperparameter: %(name)s.") % {"name": name}, "hyperparameters")

    def number(name: str, cast, low, high):
        value = requested.get(name)
        if _auto(value):
            return None
        try:
            value = cast(value)
        except (TypeError, ValueError):
            raise JobInputError(_("%(name)s must be a number or auto.") % {"name": name}, name) from None
        if not (low <= value <= high):
            raise JobInputError(
                _("%(name)s must be between %(low)s and %(high)s.") % {"name": name, "low": low, "high": high}, name
            )
        return value

    n_epochs = number("n_epochs", *HYPERPARAMETER_LIMITS["n_epochs"])
    batch_size = number("batch_size", *HYPERPARAMETER_LIMITS["batch_size"])
    multiplier = number("learning_rate_multiplier", *HYPERPARAMETER_LIMITS["learning_rate_multiplier"])
    resolved = {
        # Few examples need more passes to be learnt; many need fewer.
        "n_epochs": n_epochs or (5 if examples < 100 else 3 if examples < 5000 else 2),
        "batch_size": batch_size or max(1, min(8, examples // 16 or 1)),
        "learning_rate_multiplier": multiplier or 1.0,
    }
    resolved["learning_rate"] = BASE_LEARNING_RATE[(method, training_type)] * resolved["learning_rate_multiplier"]
    if method == Method.DPO:
        resolved["beta"] = number("beta", *HYPERPARAMETER_LIMITS["beta"]) or DPO_BETA
    return resolved


def job_check_seed(seed) -> int | None:
    """A seed as given (a whole number from 0 to 2,147,483,647), or None: one is chosen at random."""
    if seed is None or seed == "":
        return None
    if isinstance(seed, str) and seed.strip().isdigit():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise JobInputError(_("seed must be a whole number from 0 to %(max)s.") % {"max": f"{SEED_MAX:,}"}, "seed")
    return seed


METADATA_MAX_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512


def job_check_metadata(metadata) -> dict:
    """The caller's metadata as OpenAI takes it: at most 16 pairs of a key (up to 64 characters) and a string
    value (up to 512)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise JobInputError(_("metadata must be an object of string keys and string values."), "metadata")
    if len(metadata) > METADATA_MAX_PAIRS:
        raise JobInputError(_("metadata may have at most %(n)s keys.") % {"n": METADATA_MAX_PAIRS}, "metadata")
    for key, value in metadata.items():
        if not key or len(key) > METADATA_KEY_MAX:
            raise JobInputError(
                _("A metadata key must have 1 to %(n)s characters.") % {"n": METADATA_KEY_MAX}, "metadata"
            )
        if not isinstance(value, str) or len(value) > METADATA_VALUE_MAX:
            raise JobInputError(
                _("The metadata value of %(key)s must be a string of at most %(n)s characters.")
                % {"key": key[:64], "n": METADATA_VALUE_MAX},
                "metadata",
            )
    return metadata


@dataclass
class Estimate:
    tokens_per_epoch: int
    n_epochs: int
    unit_price: Decimal
    total_tokens: int
    cost: Decimal
    formula: str


def billing_tokens_per_epoch(*, base_model: BaseModel, dataset) -> tuple[int, str]:
    """Tokens billed for one epoch, by the modality's rule, and the rule in words.

    Counted with ``base_model``'s own tokenizer where that count exists (``dataset_token_count``);
    until then, with the tokenizer the dataset was validated with."""
    from datasets.services import dataset_cached_count

    if getattr(dataset, "pk", None) and base_model.pk:
        count = dataset_cached_count(dataset=dataset, base_model=base_model)
        if count is not None and count.counted:
            dataset = count
    images = getattr(dataset, "images", 0) or 0
    text_tokens = getattr(dataset, "text_tokens", None)
    if text_tokens is None:
        text_tokens = dataset.tokens or 0
    if base_model.modality == Modality.IMAGE_GENERATION:
        return images * 1024, f"{images} images × 1,024"
    if base_model.modality == Modality.IMAGE_UNDERSTANDING:
        return images * 1600 + text_tokens, f"({images} images × 1,600 + {text_tokens:,} text tokens)"
    return dataset.tokens or 0, f"{dataset.tokens or 0:,} tokens"


def job_estimate(*, base_model: BaseModel, dataset, n_epochs: int) -> Estimate:
    per_epoch, words = billing_tokens_per_epoch(base_model=base_model, dataset=dataset)
    total = per_epoch * n_epochs
    cost = token_cost(total, base_model.training_price)
    formula = f"{words} × {n_epochs} epochs × {base_model.training_price} / 1,000 tokens = {cost}"
    return Estimate(per_epoch, n_epochs, base_model.training_price, total, cost, formula)


# --- memory -----------------------------------------------------------------


def _longest_sequence(*, base_model: BaseModel, dataset, method: str) -> int | None:
    """Tokens of the longest unit the engine puts in one micro-batch (a DPO pair: both answers), within the
    context; None until the dataset's longest example is known."""
    from datasets.services import dataset_cached_count

    longest = None
    count = dataset_cached_count(dataset=dataset, base_model=base_model) if getattr(dataset, "pk", None) else None
    if count is not None and count.counted:
        longest = count.longest_example_tokens
    if longest is None:
        longest = getattr(dataset, "longest_example_tokens", None)
    if not longest:
        return None
    longest = min(longest, base_model.context_length)
    return 2 * longest if method == Method.DPO else longest


def job_memory_estimate(*, base_model: BaseModel, dataset, training_type: str, method: str = Method.SFT):
    """Peak training memory of a task on the training node (``jobs.training.budget``), or None where the base
    model's shape (config.json) or the dataset's longest example is not known yet."""
    from modelcards.capabilities import model_config, training_node

    from .training.budget import ModelShape, estimate_training_memory

    config = model_config(base_model)
    longest = _longest_sequence(base_model=base_model, dataset=dataset, method=method)
    if longest is None:
        return None
    try:
        shape = ModelShape.from_dict(config)
    except (KeyError, TypeError, ValueError):  # weights not here, or not a decoder config we can read
        return None
    node = training_node()
    # a CPU node fills its activation budget with micro-batches (the engine's plan, jobs/training/engine.py)
    budget = None if node.gpu else settings.TRAINING_CPU_ACTIVATION_MB * 2**20
    return estimate_training_memory(
        shape=shape,
        training_type=training_type,
        bf16=node.bf16,
        longest_sequence=longest,
        available=node.memory,
        parameters=base_model.parameters or None,
        activation_budget=budget,
    )


def gigabytes(n: int) -> str:
    return f"{n / 2**30:,.1f} GB"


def job_check_memory(*, base_model: BaseModel, dataset, training_type: str, method: str) -> None:
    """Refuse a task that cannot fit the training node, naming the estimate and the node's memory."""
    estimate = job_memory_estimate(base_model=base_model, dataset=dataset, training_type=training_type, method=method)
    if estimate is None or estimate.fits:
        return
    raise JobInputError(
        _(
            "This task needs about %(need)s of memory to train (%(type)s%(recompute)s), more than the %(have)s of "
            "the training node. Choose LoRA, a smaller base model or shorter examples."
        )
        % {
            "need": gigabytes(estimate.total),
            "type": training_type,
            "have": gigabytes(estimate.available),
            "recompute": _(", activations recomputed") if estimate.gradient_checkpointing else "",
        },
        "training_type",
        code="insufficient_memory",
    )


# --- creating ---------------------------------------------------------------


def _model_code(base_model: BaseModel, suffix: str) -> str:
    return f"ft:{base_model.code}:{suffix or 'model'}:{secrets.token_hex(3)}"


def job_check_choices(*, user, base_model: BaseModel, method: str, training_type: str) -> None:
    if not BaseModel.objects.usable_by(user).filter(pk=base_model.pk).exists():
        raise JobInputError(_("Model %(code)s is not available to you.") % {"code": base_model.code}, "model")
    capabilities = base_model.capabilities()
    if capabilities.blocker:
        raise JobInputError(
            _("%(code)s cannot be fine-tuned on this server: %(reason)s")
            % {"code": base_model.code, "reason": capabilities.blocker},
            "model",
            code="unsupported_model",
        )
    present, where = base_model.weights_status()
    if not present:
        raise JobInputError(
            _("The weights of %(code)s are not on this server (%(where)s), so it cannot be fine-tuned here.")
            % {"code": base_model.code, "where": where},
            "model",
            code="weights_missing",
        )
    if method not in base_model.methods:
        raise JobInputError(
            _("%(code)s does not support %(method)s.") % {"code": base_model.code, "method": method.upper()}, "method"
        )
    if training_type not in base_model.training_types:
        raise JobInputError(
            _("%(code)s does not support %(type)s training.") % {"code": base_model.code, "type": training_type},
            "training_type",
        )
    # What this server can really do with it: the node's memory for this training type.
    for verdict, param in (
        (capabilities.method(method), "method"),
        (capabilities.training_type(training_type), "training_type"),
    ):
        if not verdict:
            raise JobInputError(
                _("%(code)s cannot be fine-tuned this way on this server: %(reason)s")
                % {"code": base_model.code, "reason": verdict.reason},
                param,
                code="unsupported_model",
            )


def job_check_dataset(*, user, base_model: BaseModel, method: str, dataset, param: str) -> None:
    if dataset.owner_id != user.pk:
        raise JobInputError(_("No such file."), param, code="file_not_found")
    if dataset.status == DatasetStatus.INVALID:
        raise JobInputError(
            _("%(name)s did not pass validation; fix its errors and upload it again.") % {"name": dataset.name},
            param,
            code="invalid_file",
        )
    if dataset.status != DatasetStatus.READY:
        return  # still validating: its category is checked again when it is ready (job_prepare)
    uncounted = _why_uncounted(dataset=dataset, base_model=base_model)
    if uncounted:
        raise JobInputError(uncounted, param, code="tokens_not_counted")
    allowed = CATEGORIES_FOR.get((method, base_model.modality), set())
    if dataset.category not in allowed:
        raise JobInputError(
            _wrong_category(dataset=dataset, base_model=base_model, method=method, allowed=allowed),
            param,
            code="invalid_file_category",
        )


def _wrong_category(*, dataset, base_model: BaseModel, method: str, allowed: set[str]) -> str:
    """Why ``dataset`` cannot train ``method`` on ``base_model``, naming categories and method as the pages do."""
    values = {
        "name": dataset.name,
        "category": dataset.get_category_display() or dataset.category,
        "method": Method(method).label if method in Method.values else method,
        "code": base_model.code,
    }
    # In the order of the datasets' own list (the upload form's), each by its display name.
    names = [str(label) for value, label in DatasetCategory.choices if value in allowed]
    if not names:
        return _("%(name)s is in the category “%(category)s”; %(method)s on %(code)s trains on no category.") % values
    return ngettext(
        "%(name)s is in the category “%(category)s”; %(method)s on %(code)s needs a dataset in the category "
        "%(allowed)s.",
        "%(name)s is in the category “%(category)s”; %(method)s on %(code)s needs a dataset in one of the "
        "categories %(allowed)s.",
        len(names),
    ) % {**values, "allowed": ", ".join(f"“{name}”" for name in names)}


def _why_uncounted(*, dataset, base_model: BaseModel) -> str:
    """Why the dataset's tokens could not be counted for ``base_model`` ("" when they were, or are not yet tried)."""
    from datasets.services import dataset_cached_count

    count = dataset_cached_count(dataset=dataset, base_model=base_model)
    if count is not None:
        if count.counted:
            return ""
        reason = count.error
    elif dataset.base_model_id == base_model.pk and dataset.tokens is None:
        reason = dataset.status_text
    else:
        return ""  # not counted with this model yet: job_prepare counts it
    return _(
        "The tokens of %(name)s could not be counted with %(code)s, so the task cannot be estimated or "
        "billed: %(reason)s"
    ) % {"name": dataset.name, "code": base_model.code, "reason": reason or _("no reason was recorded")}


def job_check_quota(*, user) -> None:
    """The user's limit of tasks not yet finished (USER_MAX_RUNNING_JOBS, or their own set in the admin)."""
    try:
        quota_enforce(
            user=user,
            name="running_jobs",
            used_qs=FineTuningJob.objects.filter(owner=user).exclude(status__in=FINAL_STATUSES),
        )
    except QuotaExceeded as exc:
        raise JobInputError(exc.message, None, code="quota_exceeded") from None


def job_create(
    *,
    user,
    base_model: BaseModel,
    training_dataset,
    validation_dataset=None,
    method: str = Method.SFT,
    training_type: str = TrainingType.LORA,
    hyperparameters: dict | None = None,
    suffix: str = "",
    request_id: str = "",
    seed: int | None = None,
    metadata: dict | None = None,
) -> tuple[FineTuningJob, bool]:
    """Create a task (or return the one already made for ``request_id``). Returns (job, created).

    ``seed``: None chooses one at random; either way it is recorded on the task (``job.seed``)."""
    request_id = (request_id or "")[:128]
    if request_id:
        existing = FineTuningJob.objects.filter(owner=user, request_id=request_id).first()
        if existing:
            return existing, False
    suffix = (suffix or "").strip()
    if suffix and not SUFFIX_RE.match(suffix):
        raise JobInputError(_("The suffix may have at most 40 characters of a-z, 0-9, - and _."), "suffix")
    if method not in Method.values:
        raise JobInputError(_("method must be sft or dpo."), "method")
    if training_type not in TrainingType.values:
        raise JobInputError(_("training_type must be lora or full."), "training_type")
    seed = job_check_seed(seed)
    metadata = job_check_metadata(metadata)
    job_check_quota(user=user)  # early, for a quick answer; again, locked, where the task is created
    job_check_choices(user=user, base_model=base_model, method=method, training_type=training_type)
    job_check_dataset(user=user, base_model=base_model, method=method, dataset=training_dataset, param="training_file")
    if validation_dataset is not None:
        job_check_dataset(
            user=user, base_model=base_model, method=method, dataset=validation_dataset, param="validation_file"
        )
    job_check_memory(base_model=base_model, dataset=training_dataset, training_type=training_type, method=method)
    resolved = hyperparameters_resolve(
        requested=hyperparameters or {},
        method=method,
        training_type=training_type,
        examples=training_dataset.examples or 0,
    )
    estimate = job_estimate(base_model=base_model, dataset=training_dataset, n_epochs=resolved["n_epochs"])
    for _attempt in range(5):
        code = _model_code(base_model, suffix)
        if BaseModel.objects.filter(code=code).exists():
            continue
        try:
            with transaction.atomic():
                job_check_quota(user=user)
                job = FineTuningJob.objects.create(
                    owner=user,
                    base_model=base_model,
                    training_dataset=training_dataset,
                    validation_dataset=validation_dataset,
                    method=method,
                    training_type=training_type,
                    hyperparameters=hyperparameters or {},
                    resolved_hyperparameters=resolved,
                    suffix=suffix,
                    fine_tuned_model=code,
                    request_id=request_id,
                    estimated_tokens=estimate.total_tokens,
                    estimated_cost=estimate.cost,
                    seed=new_seed() if seed is None else seed,
                    metadata=metadata,
                )
                job_event(job=job, message=_("Task created; checking the files."))
                _send_prepare(job.pk)
            return job, True
        except IntegrityError:
            if request_id:  # a concurrent retry of the same request won the race
                existing = FineTuningJob.objects.filter(owner=user, request_id=request_id).first()
                if existing:
                    return existing, False
    raise JobInputError(_("Could not allocate a unique model code; try again."), "suffix")


def _send_prepare(job_id: int) -> None:
    """Once the current transaction commits (at once outside one)."""
    enqueue_on_commit("jobs.prepare_job", job_id, queue="default")  # lost: jobs_repair sends it again


# --- events -----------------------------------------------------------------


def checkpoint_saved(*, checkpoint) -> None:
    """An epoch's checkpoint is stored: the webhooks that asked for ``fine_tuning.job.checkpoint.saved`` hear of it
    (no notification for people: one an epoch is noise)."""
    from django.urls import reverse

    from notifications.services import notify

    job = checkpoint.job
    notify(
        user=job.owner,
        event="training.checkpoint_saved",
        subject_name=job.suffix or job.base_model.code,
        subject_code=f"ftckpt-{checkpoint.pk}",
        url=reverse("jobs:detail", args=[job.public_id]),
    )


# --- queue ------------------------------------------------------------------


def job_prepare(*, job_id: int) -> str:
    """validating_files → queued once the files are validated; fail on invalid files."""
    job = (
        FineTuningJob.objects.select_related("training_dataset", "validation_dataset", "base_model", "owner")
        .filter(pk=job_id)
        .first()
    )
    if job is None or job.status != JobStatus.VALIDATING_FILES:
        return "skip"
    for dataset, param in ((job.training_dataset, "training_file"), (job.validation_dataset, "validation_file")):
        if dataset is None:
            continue
        if dataset.status == DatasetStatus.INVALID:
            job_fail(
                job=job,
                code="invalid_file",
                param=param,
                message=ngettext(
                    "%(name)s did not pass validation (%(count)s error).",
                    "%(name)s did not pass validation (%(count)s errors).",
                    dataset.error_count or 0,
                )
                % {"name": dataset.name, "count": dataset.error_count or 0},
            )
            return "failed"
        if dataset.status != DatasetStatus.READY:
            return "wait"
        try:
            job_check_dataset(
                user=job.owner, base_model=job.base_model, method=job.method, dataset=dataset, param=param
            )
        except JobInputError as exc:
            job_fail(job=job, code=exc.code, message=exc.message, param=param)
            return "failed"
    # Estimate and bill with the task's own base model: count with its tokenizer once (cached per dataset).
    from datasets.services import dataset_token_count

    count = dataset_token_count(dataset=job.training_dataset, base_model=job.base_model)
    if not count.counted:
        if count.invalid:  # read with this model's tokenizer and context, the file has errors
            job_fail(
                job=job,
                code="invalid_training_data",
                param="training_file",
                message=_("%(name)s cannot train %(code)s: %(reason)s")
                % {"name": job.training_dataset.name, "code": job.base_model.code, "reason": count.error},
            )
        else:
            job_fail(
                job=job,
                code="tokens_not_counted",
                param="training_file",
                message=_why_uncounted(dataset=job.training_dataset, base_model=job.base_model),
            )
        return "failed"
    try:  # now with the longest example as this model's tokenizer counts it
        job_check_memory(
            base_model=job.base_model, dataset=job.training_dataset, training_type=job.training_type, method=job.method
        )
    except JobInputError as exc:
        job_fail(job=job, code=exc.code, message=exc.message, param=exc.param or "")
        return "failed"
    hp = hyperparameters_resolve(
        requested=job.hyperparameters,
        method=job.method,
        training_type=job.training_type,
        examples=job.training_dataset.examples or 0,
    )
    estimate = job_estimate(base_model=job.base_model, dataset=job.training_dataset, n_epochs=hp["n_epochs"])
    if (estimate.total_tokens, estimate.cost) != (job.estimated_tokens, job.estimated_cost):
        FineTuningJob.objects.filter(pk=job.pk).update(
            resolved_hyperparameters=hp, estimated_tokens=estimate.total_tokens, estimated_cost=estimate.cost
        )
        if job.estimated_tokens:
            job_event(
                job=job,
                message=_("Counted with %(code)s's tokenizer: %(n)s tokens per epoch; estimated cost %(cost)s.")
                % {"code": job.base_model.code, "n": f"{estimate.tokens_per_epoch:,}", "cost": estimate.cost},
            )
    return "queued" if states.job_queue_validated(job=job) else "skip"


def queue_position(job: FineTuningJob) -> int | None:
    """1 for the next task to start, counting every user's queued tasks."""
    if job.status != JobStatus.QUEUED:
        return None
    ahead = FineTuningJob.objects.filter(status=JobStatus.QUEUED).filter(
        Q(created_at__lt=job.created_at) | Q(created_at=job.created_at, pk__lt=job.pk)
    )
    return ahead.count() + 1


def queue_estimate(job: FineTuningJob) -> dict | None:
    """For a queued task: its position, and in how many seconds it should start (None when there is nothing to
    go by yet: no task running with a measured speed, and none finished before).

    The running tasks' remaining time is what their own last metrics said, less the time since; each task ahead
    then takes the first training slot to free up (as many slots as tasks running now), for its estimated tokens
    at the speed the running task measures (else the last finished task's), plus the time the last task took
    from start to its first step (loading the model, preparing the data). Every task's end also counts the time
    the last finished task took from its last step to succeeded (final evaluation, saving, the model card)."""
    position = queue_position(job)
    if position is None:
        return None
    out = {"position": position, "starts_in_seconds": None}
    now = timezone.now()
    running = list(FineTuningJob.objects.filter(status=JobStatus.RUNNING).order_by("started_at"))
    if not running:
        return out
    previous = (
        FineTuningJob.objects.filter(status=JobStatus.SUCCEEDED, first_step_at__isnull=False, started_at__isnull=False)
        .order_by("-finished_at")
        .first()
    )
    warmup = tail = 0.0
    if previous is not None:
        warmup = (previous.first_step_at - previous.started_at).total_seconds()
        last_step = _last_metrics_at(previous)
        if last_step is not None and previous.finished_at is not None:
            tail = max(0.0, (previous.finished_at - last_step).total_seconds())
        tail += _handover_seconds()
    speed, free_at = None, []
    for other in running:
        progress = other.progress or {}
        left = progress.get("remaining_seconds")
        last = _last_metrics_at(other)
        if left is None or last is None:
            return out  # not measured yet: an honest "unknown" rather than a guess
        free_at.append(max(0.0, float(left) - (now - last).total_seconds()) + tail)
        speed = speed or progress.get("tokens_per_second")
    if not speed and previous is not None and previous.result_id:
        speed = (previous.result.metrics or {}).get("tokens_per_second")
    ahead = (
        FineTuningJob.objects.filter(status=JobStatus.QUEUED)
        .filter(Q(created_at__lt=job.created_at) | Q(created_at=job.created_at, pk__lt=job.pk))
        .order_by("created_at", "pk")
    )
    for other in ahead:
        if not speed or not other.estimated_tokens:
            return out
        free_at.sort()
        free_at[0] += warmup + other.estimated_tokens / float(speed) + tail
    out["starts_in_seconds"] = round(min(free_at))
    return out


def job_estimated_finish(job: FineTuningJob) -> float | None:
    """When a running task should finish (unix seconds): its last metrics' remaining time, counted from when they
    were logged; None for a task that is not running or has not measured its speed yet."""
    left = (job.progress or {}).get("remaining_seconds")
    if job.status != JobStatus.RUNNING or left is None:
        return None
    last = _last_metrics_at(job)
    return None if last is None else last.timestamp() + float(left)


def _handover_seconds() -> float:
    """How long the last task that waited in the queue took to start once the task before it had finished (the
    worker frees its memory and starts a fresh process); 0 until one has been seen."""
    for job in (
        FineTuningJob.objects.filter(started_at__isnull=False)
        .exclude(status=JobStatus.QUEUED)
        .order_by("-started_at")[:20]
    ):
        before = (
            FineTuningJob.objects.filter(finished_at__lte=job.started_at, finished_at__gt=job.created_at)
            .order_by("-finished_at")
            .values_list("finished_at", flat=True)
            .first()
        )
        if before is not None:
            return max(0.0, (job.started_at - before).total_seconds())
    return 0.0


def _last_metrics_at(job: FineTuningJob):
    return job.events.filter(type=JobEvent.Type.METRICS).order_by("-id").values_list("created_at", flat=True).first()


def job_claim_next(*, worker: str) -> FineTuningJob | None:
    """Take the oldest queued task for this worker with a conditional update."""
    for job_id in (
        FineTuningJob.objects.filter(status=JobStatus.QUEUED)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[:20]
    ):
        if states.job_claim(job_id=job_id, worker=worker):
            return FineTuningJob.objects.select_related(
                "base_model", "training_dataset", "validation_dataset", "owner"
            ).get(pk=job_id)
    return None


def worker_name() -> str:
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Writes heartbeat_at every few seconds while a job runs in this process.

    A worker killed outright stops writing; the periodic repair notices. A worker alive but stuck
    in one step (a hung kernel, a dead collective) keeps writing, so the heartbeat also watches
    progress: ``watch.progress_at`` (monotonic, set at every step) older than ``stuck_after``
    seconds gives the task back to the queue (``job_requeue_stuck``) and marks ``watch.abandoned``."""

    def __init__(self, job_id: int, interval: float = 5.0, watch=None, stuck_after: float | None = None):
        self.job_id, self.interval = job_id, interval
        self.watch, self.stuck_after = watch, stuck_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{job_id}")

    def _stuck_for(self) -> float | None:
        if self.watch is None or not self.stuck_after:
            return None
        idle = time.monotonic() - self.watch.progress_at
        return idle if idle >= self.stuck_after else None

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(self.interval):
                try:
                    if self._beat():
                        return
                except Exception:  # a database hiccup must not end the heartbeat for good
                    logger.exception("job %s: heartbeat failed; trying again", self.job_id)
                    connection.close()
        finally:
            connection.close()

    def _beat(self) -> bool:
        """One heartbeat; True once the task was given back (no more heartbeats)."""
        idle = self._stuck_for()
        if idle is not None:
            self.watch.abandoned = True
            job_requeue_stuck(job_id=self.job_id, idle_seconds=idle)
            # No more heartbeats: the task is not this worker's any more. A step that still has not
            # returned after as long again never will: a pool child exits, and the pool starts a
            # fresh one for the queue (the main process of a test never exits).
            if not self._stop.wait(self.stuck_after) and _in_pool_child():
                logger.error("job %s: the stuck step never returned; exiting this worker child", self.job_id)
                os._exit(75)
            return True
        FineTuningJob.objects.filter(pk=self.job_id, status=JobStatus.RUNNING).update(heartbeat_at=timezone.now())
        return False

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _in_pool_child() -> bool:
    """True in a Celery prefork pool child (a daemon process), which the pool replaces when it exits."""
    from billiard.process import current_process

    return bool(current_process().daemon)


def job_storage_name(job: FineTuningJob) -> str:
    """The task's folder in storage: its checkpoints under ``checkpoints/``, its result under ``final``."""
    return f"jobs/{job.owner_id}/{job.public_id}"


def job_scratch_dir(job: FineTuningJob) -> Path:
    """This worker's local folder for the task while it trains (removed afterwards; storage keeps what counts)."""
    return Path(settings.VAR_DIR) / "scratch" / "jobs" / job.public_id


# --- cancel, delete, repair ---------------------------------------------------


class JobNotDeletable(Exception):
    pass


def job_delete(*, job: FineTuningJob) -> None:
    """Delete a finished task and its files; a fine-tuned model made by it must be deleted first."""
    if not job.is_final:
        raise JobNotDeletable(_("Cancel the task before deleting it."))
    if FineTunedModel.objects.live().filter(job=job).exists():
        raise JobNotDeletable(
            _("This task produced model %(code)s; delete the model first.") % {"code": job.fine_tuned_model}
        )
    output = job.output_dir
    with transaction.atomic():
        # Lock the row first, so that nothing writes an event or checkpoint for this task
        # between collecting its rows and deleting it.
        locked = FineTuningJob.objects.select_for_update().filter(pk=job.pk).first()
        if locked is not None:
            locked.delete()  # its deleted model card stays: model codes are never reused
    if output:
        storage.delete_folder(output)


def jobs_repair(*, heartbeat_timeout: float | None = None) -> dict:
    """Periodic: requeue tasks whose worker died, re-send lost messages."""
    timeout = heartbeat_timeout if heartbeat_timeout is not None else settings.JOB_HEARTBEAT_TIMEOUT
    now = timezone.now()
    counts = {"requeued": 0, "failed": 0, "prepared": 0, "kicked": 0}
    stale = FineTuningJob.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=now - timedelta(seconds=timeout))
    for job in stale:
        if job.cancel_requested_at:
            states.job_finish_cancelled(job=job, message=_("Cancelled (its worker was gone)."))
            continue
        if job.attempts >= MAX_ATTEMPTS:
            if job_fail(
                job=job,
                code="worker_lost",
                message=_("worker lost: the training worker stopped %(n)s times.") % {"n": job.attempts},
            ):
                counts["failed"] += 1
            continue
        if states.job_requeue_lost(job=job):
            counts["requeued"] += 1
    for job_id in FineTuningJob.objects.filter(
        status=JobStatus.VALIDATING_FILES, created_at__lt=now - timedelta(seconds=30)
    ).values_list("pk", flat=True):
        _send_prepare(job_id)
        counts["prepared"] += 1
    if FineTuningJob.objects.filter(status=JobStatus.QUEUED).exists() and _training_messages_waiting() == 0:
        # A message got lost (or a worker died holding it): one kick is enough, the worker takes the oldest.
        states.kick_training()
        counts["kicked"] = 1
    return counts


def _training_messages_waiting(queue: str = "training") -> int:
    """Messages waiting in a Celery queue (a Redis list of that name); 0 if Redis cannot say."""
    from common.redis import redis_client

    try:
        with redis_client(timeout=2) as client:
            return int(client.llen(queue))
    except Exception:
        return 0


# --- helpers for the console's form -------------------------------------------


def dataset_warnings(*, base_model: BaseModel, dataset) -> list[str]:
    """What the user should know before launching on this dataset."""
    warnings = []
    examples = dataset.examples or 0
    if examples < advised_min_examples():
        warnings.append(
            ngettext(
                "Only %(n)s example: the platform advises at least several hundred for good results.",
                "Only %(n)s examples: the platform advises at least several hundred for good results.",
                examples,
            )
            % {"n": examples}
        )
    longest = getattr(dataset, "longest_example_tokens", 0) or 0
    if longest > base_model.context_length:
        warnings.append(
            _(
                "Some examples are longer than %(code)s's context (%(ctx)s tokens; longest %(longest)s): "
                "they will be truncated."
            )
            % {"code": base_model.code, "ctx": base_model.context_length, "longest": longest}
        )
    return warnings


def job_create_from_form(*, user, form, sha256: str = "") -> FineTuningJob:
    """Create a task from the console's form, uploading the training file first if one was given."""
    data = form.cleaned_data
    training = data.get("training_dataset")
    upload = data.get("training_upload")
    if upload is not None:
        from datasets.services import DatasetError, dataset_create

        try:
            training, _created = dataset_create(
                owner=user,
                upload=upload,
                sha256=sha256,
                category="dpo" if data["method"] == Method.DPO else "",
                base_model=data["base_model"],  # counted with the tokenizer of the model it will train
            )
        except DatasetError as exc:
            raise JobInputError(str(exc), "training_file") from None
    job, _created = job_create(
        user=user,
        base_model=data["base_model"],
        training_dataset=training,
        validation_dataset=data.get("validation_dataset"),
        method=data["method"],
        training_type=data["training_type"],
        hyperparameters=form.hyperparameters(),
        suffix=data.get("suffix", ""),
        seed=data.get("seed"),
    )
    return job
