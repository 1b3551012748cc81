"""Runs one claimed fine-tuning task inside a training worker.

The training engine (jobs/training) knows nothing of Django; this module feeds
it the dataset, turns its callbacks into events, progress and checkpoints in
the database, and records the outcome.

The engine writes into this worker's scratch folder; every checkpoint and the
final result are uploaded to storage (common.storage) as they are made, so the
next worker to take the task may be on another machine: it fetches the newest
checkpoint from storage to resume.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from common import storage
from console import cpus
from console.errors import without_server_paths
from modelcards.models import FineTunedModel
from modelcards.pricing import token_cost

from .checkpoints import checkpoints_publish
from .models import Checkpoint, FineTuningJob, JobEvent
from .services import DPO_BETA, Heartbeat, billing_tokens_per_epoch, checkpoint_saved, job_scratch_dir, job_storage_name
from .states import (
    job_event,
    job_fail,
    job_finish_cancelled,
    job_finish_paused,
    job_requeue_preempted,
    job_succeed,
)
from .training.engine import STATE_FILE

logger = logging.getLogger(__name__)

# Set by SIGTERM while a task trains in this process (a worker being stopped: Ctrl-C on the
# start command, systemctl stop, a deploy). The training stops at its next step and the task
# goes back to the queue, to resume from its last checkpoint on the next worker to take it.
SHUTDOWN = threading.Event()


class preemptible:
    """While training, SIGTERM asks the task to give itself back instead of killing the process."""

    def __enter__(self):
        SHUTDOWN.clear()
        try:
            self._previous = signal.signal(signal.SIGTERM, self._on_term)
        except ValueError:  # not the main thread (eager or threaded pools): nothing to install
            self._previous = None
        return self

    @staticmethod
    def _on_term(signum, frame) -> None:
        logger.warning("SIGTERM: stopping the training and returning the task to the queue")
        SHUTDOWN.set()

    def __exit__(self, *exc) -> None:
        # The task has been handed back (or finished): the worker's own shutdown takes it from here.
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        SHUTDOWN.clear()


def _clock(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class JobCallbacks:
    """Bridges engine callbacks to the database (a subclass of the engine's Callbacks at run time)."""

    cancel_poll_seconds = 1.0

    def __init__(self, job: FineTuningJob):
        self.job = job
        self.folder = job_storage_name(job)
        self._last_poll = 0.0
        self._stop = False
        self.preempted = False
        self.abandoned = False
        self.progress_at = time.monotonic()
        self._first_step_seen = job.first_step_at is not None

    def event(self, level: str, message: str, data: dict | None = None) -> None:
        job_event(job=self.job, level=level, message=message, data=data or {})

    def metrics(self, data: dict) -> None:
        payload = {
            "epoch": data.get("epoch"),
            "current_steps": data.get("current_steps"),
            "total_steps": data.get("total_steps"),
            "elapsed_time": _clock(data.get("elapsed_time")),
            "remaining_time": _clock(data.get("remaining_time")),
            "elapsed_seconds": data.get("elapsed_time"),
            "remaining_seconds": data.get("remaining_time"),
            "trained_tokens": data.get("trained_tokens"),
            "loss": data.get("loss"),
            "eval_loss": data.get("eval_loss"),
            "learning_rate": data.get("learning_rate"),
            "tokens_per_second": data.get("tokens_per_second"),
        }
        JobEvent.objects.create(
            job=self.job,
            type=JobEvent.Type.METRICS,
            level="info",
            data=payload,
            message=_("step %(current)s/%(total)s, loss %(loss)s")
            % {
                "current": payload["current_steps"],
                "total": payload["total_steps"],
                "loss": "-" if payload["loss"] is None else f"{payload['loss']:.4f}",
            },
        )
        update = {"progress": payload, "heartbeat_at": timezone.now()}
        if not self._first_step_seen and (payload["current_steps"] or 0) > 0:
            update["first_step_at"] = timezone.now()
            self._first_step_seen = True
        FineTuningJob.objects.filter(pk=self.job.pk).update(**update)

    def checkpoint(self, epoch: int, path: Path, *, step: int = 0, complete: bool = True) -> None:
        # Stored before it is recorded: a row always names a complete checkpoint in storage.
        # the scratch copy is not read again: moved into place on a filesystem storage, else uploaded and removed
        name = storage.upload_folder(path, f"{self.folder}/checkpoints/{Path(path).name}", move=True)
        shutil.rmtree(path, ignore_errors=True)
        replaced = Checkpoint.objects.filter(job=self.job, epoch=epoch).values_list("path", flat=True).first()
        # One row per epoch: a mid-epoch checkpoint is replaced by the next one and by the epoch's end.
        checkpoint, _created = Checkpoint.objects.update_or_create(
            job=self.job,
            epoch=epoch,
            defaults={
                "path": name,
                "step": step,
                "created_at": timezone.now(),  # when this one was saved
                "metrics": FineTuningJob.objects.get(pk=self.job.pk).progress,
            },
        )
        if replaced and replaced != name:
            storage.delete_folder(replaced)
        if complete:
            job_event(job=self.job, message=_("Checkpoint saved after epoch %(n)s.") % {"n": epoch})
            checkpoint_saved(checkpoint=checkpoint)
        else:
            job_event(
                job=self.job, message=_("Checkpoint saved at step %(step)s (epoch %(n)s).") % {"step": step, "n": epoch}
            )
        # Only the newest checkpoint is resumed from: older ones keep their weights but drop the
        # optimizer state, which for full fine-tuning is gigabytes an epoch.
        for older in Checkpoint.objects.filter(job=self.job, epoch__lt=epoch).values_list("path", flat=True):
            storage.delete_file(f"{older}/{STATE_FILE}")

    def should_stop(self) -> bool:
        self.progress_at = time.monotonic()  # polled every step: the stuck-step watch reads it
        if self.abandoned:  # the watch gave the task back while a step hung: it is not ours any more
            self._stop = True
            return True
        if SHUTDOWN.is_set():
            self.preempted = self._stop = True
            return True
        now = time.monotonic()
        if not self._stop and now - self._last_poll >= self.cancel_poll_seconds:
            self._last_poll = now
            self._stop = (
                FineTuningJob.objects.filter(pk=self.job.pk)
                .filter(Q(cancel_requested_at__isnull=False) | Q(pause_requested_at__isnull=False))
                .exists()
            )
        return self._stop

    def checkpoint_before_stop(self) -> bool:
        """A pause keeps the steps done (a checkpoint of the step reached); a cancel or a stopping worker does not
        need one (the worker's stop resumes from the newest checkpoint, as a lost worker does)."""
        return (
            not self.preempted
            and not self.abandoned
            and FineTuningJob.objects.filter(
                pk=self.job.pk, pause_requested_at__isnull=False, cancel_requested_at__isnull=True
            ).exists()
        )


def _engine_example(example: dict) -> dict:
    """Datasets normalize DPO lines to a top-level prompt; the engine reads the upload format."""
    if "preferred_output" in example and "input" not in example:
        prompt = {"messages": example.get("messages", [])}
        if example.get("tools"):
            prompt["tools"] = example["tools"]
        return {
            "input": prompt,
            "preferred_output": example["preferred_output"],
            "non_preferred_output": example["non_preferred_output"],
        }
    return example


def _load_examples(dataset) -> list[dict]:
    from datasets.services import dataset_iter_examples

    examples = [_engine_example(e) for e in dataset_iter_examples(dataset=dataset)]
    if not examples:
        from .training.engine import TrainingDataError

        raise TrainingDataError(
            _("%(name)s has no usable example: every line has errors, or the file changed after validation.")
            % {"name": dataset.name}
        )
    return examples


def job_run(*, job: FineTuningJob) -> str:
    """Train a claimed (running) job to the end: succeeded, failed or cancelled."""
    from .training import engine

    class Callbacks(JobCallbacks, engine.Callbacks):
        pass

    callbacks = Callbacks(job)
    hp = job.resolved_hyperparameters
    cpus.pin(cpus.training())  # the serving instances keep their own CPUs (console/cpus.py)
    scratch = job_scratch_dir(job)
    shutil.rmtree(scratch, ignore_errors=True)  # what an earlier attempt on this machine left
    try:
        return _train(job, callbacks, engine, scratch, hp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # a failure's leftovers (success cleaned before its state)


def _train(job: FineTuningJob, callbacks, engine, scratch: Path, hp: dict) -> str:
    from modelcards.weights import WeightsMissing, model_dir

    with Heartbeat(
        job.pk, interval=settings.JOB_HEARTBEAT_INTERVAL, watch=callbacks, stuck_after=settings.TRAINING_STUCK_SECONDS
    ):
        try:
            job_event(
                job=job,
                message=_("Training started on %(worker)s (attempt %(n)s).")
                % {"worker": job.worker, "n": job.attempts},
            )
            if training_processes() == 1 and not _has_gpu():
                job_event(job=job, message=_("CPUs: %(how)s.") % {"how": cpus.describe()})
            folder = model_dir(job.base_model)
            train_examples = _load_examples(job.training_dataset)
            if job.validation_dataset_id:
                eval_examples = _load_examples(job.validation_dataset)
            else:
                train_examples, eval_examples = engine.split_examples(
                    train_examples, fraction=0.1, seed=job_split_seed(job)
                )
                split = len(eval_examples)
                callbacks.event(
                    "info",
                    ngettext(
                        "Validation: %(n)s example split off automatically.",
                        "Validation: %(n)s examples split off automatically.",
                        split,
                    )
                    % {"n": split},
                )
            config = engine.TrainingConfig(
                method=job.method,
                training_type=job.training_type,
                n_epochs=hp["n_epochs"],
                batch_size=hp["batch_size"],
                learning_rate=hp["learning_rate"],
                max_seq_len=job.base_model.context_length,
                seed=job_training_seed(job),
                dpo_beta=hp.get("beta") or DPO_BETA,
                checkpoint_interval=settings.TRAINING_CHECKPOINT_MINUTES * 60,
                activation_memory_mb=settings.TRAINING_CPU_ACTIVATION_MB,
                precision=settings.TRAINING_PRECISION,
            )
            resume = _resume_from(job, scratch=scratch)
            output = scratch / "output"
            output.mkdir(parents=True, exist_ok=True)
            FineTuningJob.objects.filter(pk=job.pk).update(output_dir=job_storage_name(job))
            run = {
                "model_dir": folder,
                "train_examples": train_examples,
                "eval_examples": eval_examples or None,
                "config": config,
                "output_dir": output,
                "callbacks": callbacks,
                "resume_from": resume,
            }
            processes = training_processes()
            if processes > 1:  # one per GPU, relayed into the same callbacks (jobs/training/launch.py)
                from .training.launch import train_in_processes

                result = train_in_processes(processes, workdir=scratch / "processes", **run)
            else:
                result = engine.train(**run)
            final_name = storage.upload_folder(result.output_dir, f"{job_storage_name(job)}/final", move=True)
        except engine.TrainingCancelled:
            if callbacks.abandoned:
                return "requeued"  # the stuck-step watch already gave the task back
            if callbacks.preempted and _requeue_preempted(job):
                return "requeued"
            shutil.rmtree(scratch, ignore_errors=True)
            if job_finish_paused(job=job):
                return "paused"
            return _finish_cancelled(job)  # a cancel asked for at the same moment wins
        except engine.TrainingDataError as exc:
            job_fail(job=job, code="invalid_training_data", message=str(exc), param="training_file")
            return "failed"
        except engine.CheckpointError as exc:
            job_fail(job=job, code="checkpoint_unreadable", message=_("The task cannot resume: %(why)s") % {"why": exc})
            return "failed"
        except WeightsMissing as exc:
            job_fail(job=job, code="weights_missing", message=without_server_paths(str(exc)), param="model")
            return "failed"
        except MemoryError:
            job_fail(
                job=job,
                code="out_of_memory",
                message=_("The training ran out of memory; try a smaller batch size or LoRA."),
            )
            return "failed"
        except SoftTimeLimitExceeded:
            job_fail(job=job, code="time_limit", message=_("The training exceeded the worker's time limit."))
            return "failed"
        except Exception as exc:
            logger.exception("job %s failed", job.public_id)
            # The log has the full text; the task's error (shown to its owner) cuts server paths to their last part.
            shown = without_server_paths(str(exc))
            if "out of memory" in str(exc).lower():
                job_fail(job=job, code="out_of_memory", message=shown)
            else:
                job_fail(job=job, code="training_error", message=f"{type(exc).__name__}: {shown}")
            return "failed"
    # The scratch goes before the state says succeeded: whoever sees the end sees nothing left behind.
    shutil.rmtree(scratch, ignore_errors=True)
    return _finish_succeeded(job, result, final_name)


def job_training_seed(job: FineTuningJob) -> int:
    """The engine's seed (weights' initialisation, data order, dropout): the task's; 42 for a task from before
    seeds were recorded, as it trained then."""
    return 42 if job.seed is None else job.seed


def job_split_seed(job: FineTuningJob) -> int:
    """The automatic validation split's seed: the task's, so that the same seed splits the same data the same
    way; a task from before seeds were recorded split by its row id and keeps doing so (a resume sees the same)."""
    return job.pk if job.seed is None else job.seed


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def training_processes() -> int:
    """How many processes train a task here: ``TRAINING_PROCESSES``, else one per GPU when there are several."""
    if settings.TRAINING_PROCESSES > 0:
        return settings.TRAINING_PROCESSES
    import torch

    gpus = torch.cuda.device_count()
    return gpus if gpus > 1 else 1


def _resume_from(job: FineTuningJob, *, scratch: Path | None = None) -> Path | None:
    """The newest checkpoint, with the chart and progress rolled back to it; None: start from scratch.

    Metrics logged after the checkpoint were lost with the worker: they are deleted, so that the
    chart continues from the checkpoint instead of running backwards. The checkpoint is fetched
    from storage into ``scratch`` (read in place on the filesystem storage); one that is recorded but
    cannot be fetched fails the task (engine.CheckpointError) rather than training again from the start.
    """
    from .training.engine import CheckpointError

    last = job.checkpoints.order_by("-epoch", "-step").first()
    if last is None:
        return None
    try:
        if storage.is_local(last.path):
            path = storage.local_path(last.path)
        else:
            path = storage.fetch_folder(last.path, (scratch or job_scratch_dir(job)) / "resume")
    except storage.StorageError as exc:
        raise CheckpointError(
            _("its checkpoint at step %(step)s (%(path)s) cannot be fetched: %(why)s")
            % {"step": last.step, "path": last.path, "why": exc}
        ) from exc
    if not (path / STATE_FILE).exists():
        raise CheckpointError(
            _("its checkpoint at step %(step)s (%(path)s) is missing.") % {"step": last.step, "path": last.path}
        )
    step = last.step or (last.metrics or {}).get("current_steps") or 0
    with transaction.atomic():
        dropped, _kinds = JobEvent.objects.filter(
            job=job, type=JobEvent.Type.METRICS, data__current_steps__gt=step
        ).delete()
        FineTuningJob.objects.filter(pk=job.pk).update(progress=last.metrics or {})
    requeue = (
        JobEvent.objects.filter(job=job, data__has_key="requeue").order_by("-id").values_list("data", flat=True).first()
        or {}
    )
    if requeue.get("requeue") == "stopped":
        message = _("The worker was stopped; resumed from step %(step)s.")
    elif requeue.get("requeue") == "stuck":
        message = _("A step hung; resumed from step %(step)s.")
    else:
        message = _("Worker lost; resumed from step %(step)s.")
    job_event(
        job=job,
        level="warning",
        message=message % {"step": step},
        data={"step": step, "epoch": last.epoch, "metrics_dropped": dropped},
    )
    return path


def _requeue_preempted(job: FineTuningJob) -> bool:
    """The worker is being stopped: hand the task back now rather than after the heartbeat times out."""
    return job_requeue_preempted(job=job)


def _finish_cancelled(job: FineTuningJob) -> str:
    job_finish_cancelled(job=job)
    return "cancelled"


def _finish_succeeded(job: FineTuningJob, result, final_name: str) -> str:
    price = job.base_model.training_price
    if job.base_model.modality == "text":
        # The tokens the engine trained on, rendered by the renderer that counted the estimate
        # (datasets.rendering): the automatic validation split and skipped examples are not billed.
        billed = result.trained_tokens
    else:
        per_epoch, _words = billing_tokens_per_epoch(base_model=job.base_model, dataset=job.training_dataset)
        billed = per_epoch * result.epochs_completed
    cost = token_cost(billed, price)
    metrics = {
        "final_loss": result.final_loss,
        "final_eval_loss": result.final_eval_loss,
        "tokens_per_second": round(result.tokens_per_second, 1),
        "steps": result.steps,
        "epochs": result.epochs_completed,
    }

    def record() -> dict:
        card, _created = FineTunedModel.objects.update_or_create(
            code=job.fine_tuned_model,
            defaults={
                "owner": job.owner,
                "base_model": job.base_model,
                "method": job.method,
                "training_type": job.training_type,
                "hyperparameters": job.resolved_hyperparameters,
                "metrics": metrics,
                "trained_tokens": result.trained_tokens,
                "cost": cost,
                "path": final_name,
            },
        )
        FineTuningJob.objects.filter(pk=job.pk).update(result=card)
        checkpoints_publish(job=job, card=card)
        return metrics

    if not job_succeed(job=job, trained_tokens=result.trained_tokens, cost=cost, record=record):
        return "skip"
    return "succeeded"
