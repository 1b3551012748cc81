"""The fine-tuning task's state machine: every change of ``FineTuningJob.status`` happens here.

    validating_files → queued (files checked) | failed | cancelled
    queued           → running (a worker claims it) | paused | cancelled | failed
    running          → queued (worker stopped, step stuck, worker lost) | paused | succeeded | failed | cancelled
    paused           → queued (resumed) | cancelled | failed

Each transition is a compare-and-set (``common.states.StateMachine.move``: an UPDATE conditioned on the states
it may leave), and records and notifies with it, in one transaction: the event on the task's timeline, the
timestamps, the error, the owner's notification and webhooks (``notify_finished``), the training queue's kick.
Services, the runner, the Celery tasks and the admin call these functions; none writes the status itself.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from common.queueing import enqueue_on_commit
from common.states import StateMachine

from .models import FINAL_STATUSES, Checkpoint, FineTuningJob, JobEvent, JobStatus
from .signals import job_succeeded

MAX_ATTEMPTS = 3  # the first run and at most two restarts after a lost worker

S = JobStatus
JOB = StateMachine(
    FineTuningJob,
    {
        S.VALIDATING_FILES: {S.QUEUED, S.FAILED, S.CANCELLED},
        S.QUEUED: {S.RUNNING, S.PAUSED, S.CANCELLED, S.FAILED},
        S.RUNNING: {S.QUEUED, S.PAUSED, S.SUCCEEDED, S.FAILED, S.CANCELLED},
        S.PAUSED: {S.QUEUED, S.CANCELLED, S.FAILED},
        S.SUCCEEDED: set(),
        S.FAILED: set(),
        S.CANCELLED: set(),
    },
)
UNFINISHED = [s for s in JobStatus if s not in FINAL_STATUSES]


# --- what transitions record and notify ----------------------------------------


def kick_training() -> None:
    """Tell the training workers to look at the queue (a message says "look", the database says what), once the
    current transaction commits (at once outside one)."""
    enqueue_on_commit("jobs.train_next", queue="training")  # lost: jobs_repair kicks the queue again


def job_event(
    *,
    job: FineTuningJob,
    message: str,
    level: str = "info",
    data: dict | None = None,
    type: str = JobEvent.Type.MESSAGE,
) -> JobEvent:
    return JobEvent.objects.create(job=job, message=message, level=level, data=data or {}, type=type)


def notify_finished(job: FineTuningJob, event: str = "", **context) -> None:
    """Tell the owner (in-app, and by email/SMS as they chose) and the webhooks; called inside the transaction that
    ends the task (or pauses or requeues it)."""
    from django.urls import reverse

    from notifications.services import notify

    event = (
        event
        or {
            JobStatus.SUCCEEDED: "training.succeeded",
            JobStatus.FAILED: "training.failed",
            JobStatus.CANCELLED: "training.cancelled",
        }[JobStatus(job.status)]
    )
    notify(
        user=job.owner,
        event=event,
        subject_name=job.suffix or job.base_model.code,
        subject_code=job.public_id,
        url=reverse("jobs:detail", args=[job.public_id]),
        context={"model": job.fine_tuned_model, "error": job.error_message, **context},
    )


def resume_point(job: FineTuningJob) -> str:
    """Where a requeued task will resume, for its event: its newest checkpoint, or the start."""
    last = Checkpoint.objects.filter(job=job).order_by("-epoch", "-step").first()
    if last is None:
        return _("from the start")
    if not last.step:
        return _("from its epoch %(n)s checkpoint") % {"n": last.epoch}
    return _("from its checkpoint at step %(step)s (epoch %(n)s)") % {"step": last.step, "n": last.epoch}


# --- validating_files → queued; queued → running ---------------------------------


def job_queue_validated(*, job: FineTuningJob) -> bool:
    """validating_files → queued, once its files passed; the training workers are told."""
    if JOB.move(job, [S.VALIDATING_FILES], S.QUEUED):
        job_event(job=job, message=_("Files validated; the task is queued."))
        kick_training()
        return True
    return False


def job_claim(*, job_id: int, worker: str) -> bool:
    """queued → running for this worker (a conditional update: of two workers, one wins); counts the attempt."""
    now = timezone.now()
    if JOB.move(
        job_id, [S.QUEUED], S.RUNNING, worker=worker, heartbeat_at=now, started_at=now, cancel_requested_at=None
    ):
        FineTuningJob.objects.filter(pk=job_id).update(attempts=F("attempts") + 1)
        return True
    return False


# --- back to the queue -------------------------------------------------------------


def job_requeue_preempted(*, job: FineTuningJob) -> bool:
    """running → queued: the worker is being stopped; the attempt is not counted (a stopped worker is not a crashed
    one). A task whose cancel was asked for is not handed back (False): it ends cancelled."""
    with transaction.atomic():
        changed = JOB.move(
            FineTuningJob.objects.filter(pk=job.pk, cancel_requested_at__isnull=True),
            [S.RUNNING],
            S.QUEUED,
            worker="",
            attempts=F("attempts") - 1,
        )
        if changed:
            job_event(
                job=job,
                level="warning",
                message=_("The worker was stopped; the task is back in the queue and will resume %(where)s.")
                % {"where": resume_point(job)},
                data={"requeue": "stopped"},
            )
            kick_training()
    return bool(changed)


def job_requeue_stuck(*, job_id: int, idle_seconds: float) -> bool:
    """running → queued: no progress for too long (or → failed after MAX_ATTEMPTS). The attempt counts (like a lost
    worker's). The stuck process stops on its own if its step ever returns; a training worker that cannot is
    replaced by the pool (see runner)."""
    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().filter(pk=job_id, status=S.RUNNING).first()
        if job is None:
            return False
        step = (job.progress or {}).get("current_steps") or 0
        if job.attempts >= MAX_ATTEMPTS:
            job_fail(
                job=job,
                code="stuck",
                message=_("No training progress for %(s)s s at step %(step)s, %(n)s times.")
                % {"s": int(idle_seconds), "step": step, "n": job.attempts},
            )
            return False
        JOB.move(job, [S.RUNNING], S.QUEUED, worker="")
        job_event(
            job=job,
            level="warning",
            data={"requeue": "stuck", "idle_seconds": round(idle_seconds, 1)},
            message=_(
                "No progress for %(s)s s after step %(step)s; the task is back in the queue and will resume %(where)s."
            )
            % {"s": int(idle_seconds), "step": step, "where": resume_point(job)},
        )
        kick_training()
    return True


def job_requeue_lost(*, job: FineTuningJob) -> bool:
    """running → queued: its worker stopped beating (the heartbeat read is the condition, so a worker that came back
    in between keeps it)."""
    with transaction.atomic():
        if JOB.move(
            FineTuningJob.objects.filter(pk=job.pk, heartbeat_at=job.heartbeat_at), [S.RUNNING], S.QUEUED, worker=""
        ):
            job_event(
                job=job,
                level="warning",
                data={"requeue": "lost"},
                message=_("Worker lost; the task will resume %(where)s (attempt %(next)s of %(max)s).")
                % {"where": resume_point(job), "next": job.attempts + 1, "max": MAX_ATTEMPTS},
            )
            notify_finished(job, event="training.requeued")
            return True
    return False


# --- pause and resume ----------------------------------------------------------------


class JobNotPausable(Exception):
    """Pause or resume asked of a task in a state that has none; the message says why."""


def job_pause(*, job: FineTuningJob) -> FineTuningJob:
    """A queued task is paused at once; a running one saves a checkpoint of the step it reached and stops within
    seconds (the runner ends it paused: ``job_finish_paused``). Its worker is free for the next task; resume
    continues from the checkpoint."""
    now = timezone.now()
    with transaction.atomic():
        if JOB.move(job, [S.QUEUED], S.PAUSED, pause_requested_at=now):
            job_event(job=job, message=_("Paused before it started; resume puts it back in the queue."))
            job.refresh_from_db()
            notify_finished(job, "training.paused", step=0)
            return job
        if FineTuningJob.objects.filter(
            pk=job.pk, status=S.RUNNING, pause_requested_at__isnull=True, cancel_requested_at__isnull=True
        ).update(pause_requested_at=now):
            job_event(job=job, message=_("Pause requested; the training saves a checkpoint and stops."))
            job.refresh_from_db()
            return job
    job.refresh_from_db()
    if job.status == S.PAUSED or (job.status == S.RUNNING and job.pause_requested_at):
        return job  # asked twice: nothing more to do
    raise JobNotPausable(
        _("A task can be paused while it is queued or running; this one is %(status)s.")
        % {"status": job.get_status_display().lower()}
    )


def job_finish_paused(*, job: FineTuningJob) -> bool:
    """The runner's end of a pause: running → paused, once the checkpoint of the step reached is stored.

    False when the pause no longer holds (a cancel asked for at the same moment wins)."""
    with transaction.atomic():
        paused = JOB.move(
            FineTuningJob.objects.filter(pk=job.pk, pause_requested_at__isnull=False, cancel_requested_at__isnull=True),
            [S.RUNNING],
            S.PAUSED,
            worker="",
        )
        if paused:
            step = (FineTuningJob.objects.get(pk=job.pk).progress or {}).get("current_steps") or 0
            job_event(
                job=job,
                message=_("Paused at step %(step)s; resume continues %(where)s.")
                % {"step": step, "where": resume_point(job)},
                data={"paused_at_step": step},
            )
            job.refresh_from_db()
            notify_finished(job, "training.paused", step=step)
    return bool(paused)


def job_resume(*, job: FineTuningJob) -> FineTuningJob:
    """A paused task goes back in the queue; it continues from the checkpoint its pause saved, step for step."""
    with transaction.atomic():
        resumed = JOB.move(job, [S.PAUSED], S.QUEUED, pause_requested_at=None, worker="")
        if resumed:
            job_event(
                job=job,
                message=_("Resumed; back in the queue, it will continue %(where)s.") % {"where": resume_point(job)},
            )
            kick_training()
    job.refresh_from_db()
    if not resumed and job.status != S.QUEUED:
        raise JobNotPausable(
            _("Only a paused task can be resumed; this one is %(status)s.")
            % {"status": job.get_status_display().lower()}
        )
    return job


# --- the ends: cancelled, failed, succeeded ----------------------------------------------


def job_cancel(*, job: FineTuningJob) -> FineTuningJob:
    """A task that has not started (or is paused) never starts again; a running one stops within seconds (the
    runner ends it: ``job_finish_cancelled``)."""
    now = timezone.now()
    with transaction.atomic():  # the final status and its event land together
        if JOB.move(job, [S.PAUSED], S.CANCELLED, finished_at=now, cancel_requested_at=now):
            job_event(job=job, message=_("Cancelled while paused."))
            job.refresh_from_db()
            notify_finished(job)
            return job
        not_started = JOB.move(
            job, [S.VALIDATING_FILES, S.QUEUED], S.CANCELLED, finished_at=now, cancel_requested_at=now
        )
        if not_started:
            job_event(job=job, message=_("Cancelled before it started."))
            job.refresh_from_db()
            notify_finished(job)
    if not not_started and FineTuningJob.objects.filter(
        pk=job.pk, status=S.RUNNING, cancel_requested_at__isnull=True
    ).update(cancel_requested_at=now):
        job_event(job=job, message=_("Cancellation requested; stopping the training."))
    job.refresh_from_db()
    return job


def job_finish_cancelled(*, job: FineTuningJob, message: str | None = None) -> bool:
    """running → cancelled: the training stopped for a cancel (or its worker is gone and a cancel was asked for)."""
    with transaction.atomic():  # the final status and its event land together
        changed = JOB.move(job, [S.RUNNING], S.CANCELLED, finished_at=timezone.now())
        if changed:
            job_event(job=job, message=message or _("Training stopped; the task is cancelled."))
            job.refresh_from_db()
            notify_finished(job)
    return bool(changed)


def job_fail(*, job: FineTuningJob, code: str, message: str, param: str = "") -> bool:
    """Any unfinished state → failed. Returns False if it had already ended."""
    with transaction.atomic():  # the final status and its event land together
        changed = JOB.move(
            job,
            UNFINISHED,
            S.FAILED,
            error_code=code,
            error_message=message[:4000],
            error_param=param,
            finished_at=timezone.now(),
        )
        if changed:
            job_event(job=job, level="error", message=_("Failed: %(message)s") % {"message": message})
            job.refresh_from_db()
            notify_finished(job)
    return bool(changed)


def job_succeed(*, job: FineTuningJob, trained_tokens: int, cost, record) -> bool:
    """running → succeeded. ``record()`` (the runner's model card and checkpoints; it returns the final metrics)
    runs in the same transaction, before the event, the notification and the ``job_succeeded`` signal."""
    with transaction.atomic():
        if not JOB.move(
            job, [S.RUNNING], S.SUCCEEDED, finished_at=timezone.now(), trained_tokens=trained_tokens, actual_cost=cost
        ):
            return False
        metrics = record()
        job_event(
            job=job,
            message=_("Training finished: model %(code)s is ready.") % {"code": job.fine_tuned_model},
            data=metrics,
        )
        job.refresh_from_db()
        notify_finished(job)
        transaction.on_commit(lambda: job_succeeded.send_robust(sender=FineTuningJob, job=job))
    return True
