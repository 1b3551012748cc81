"""Long runs: no Celery time limit on a training worker, a stuck step is reported and requeued,
a resume rolls the chart back to its checkpoint, a checkpoint that cannot be read fails loudly."""

from __future__ import annotations

import time

import pytest

from jobs import runner, services, states
from jobs.models import Checkpoint, FineTuningJob, JobEvent, JobStatus
from jobs.training.engine import STATE_FILE, CheckpointError

from .jobs_support import chat_lines, make_dataset, wait_for

pytestmark = pytest.mark.timeout(60)


def _running_job(owner, base, dataset, **extra) -> FineTuningJob:
    return FineTuningJob.objects.create(
        owner=owner,
        base_model=base,
        training_dataset=dataset,
        fine_tuned_model=f"ft:tiny:{time.time_ns()}",
        status=JobStatus.RUNNING,
        attempts=1,
        worker="here:1",
        heartbeat_at=None,
        resolved_hyperparameters={"n_epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
        **extra,
    )


def test_a_training_worker_has_no_time_limit():
    """Celery would fall back to the app's 6-hour limit for a task whose own is None: the worker lifts it."""
    from console.celery import app

    saved = (app.conf.task_time_limit, app.conf.task_soft_time_limit)
    try:
        trainer = app.Worker(queues="training", pool_cls="solo", without_mingle=True, without_gossip=True)
        assert trainer.time_limit is None and trainer.soft_time_limit is None
        assert trainer.max_tasks_per_child == 1  # a fresh process for every task: memory goes back
    finally:
        app.conf.task_time_limit, app.conf.task_soft_time_limit = saved
        app.conf.worker_max_tasks_per_child = None
    other = app.Worker(queues="default", pool_cls="solo", without_mingle=True, without_gossip=True)
    assert other.soft_time_limit == saved[1] and other.soft_time_limit  # short tasks keep theirs
    assert not other.max_tasks_per_child


@pytest.mark.django_db(transaction=True)
def test_a_stuck_step_is_reported_and_the_task_requeued(alice, bob, tiny_base, monkeypatch):
    # The requeue kicks the training queue; a training worker of another test (session-wide) would take
    # the task at once. Here the kick is only recorded, so the task stays in the queue to be looked at.
    kicks = []
    monkeypatch.setattr(states, "kick_training", lambda: kicks.append(1))
    job = _running_job(alice, tiny_base, make_dataset(alice, chat_lines(4)), progress={"current_steps": 7})
    others = _running_job(bob, tiny_base, make_dataset(bob, chat_lines(4), name="b"))

    class Watch:  # a step that never returns: progress_at stays where it was
        progress_at = time.monotonic()
        abandoned = False

    watch = Watch()
    with services.Heartbeat(job.pk, interval=0.1, watch=watch, stuck_after=0.5):
        wait_for(
            lambda: FineTuningJob.objects.get(pk=job.pk).status == JobStatus.QUEUED,
            timeout=10,
            what="the stuck task requeued",
        )
    job.refresh_from_db()
    assert watch.abandoned and job.worker == "" and kicks == [1]
    event = job.events.get(data__requeue="stuck")
    assert event.level == "warning" and "No progress for" in event.message and "after step 7" in event.message
    # bob's task, in the same state but not watched by this heartbeat, is untouched
    assert FineTuningJob.objects.get(pk=others.pk).status == JobStatus.RUNNING
    # the engine's next poll (if the step ever returns) stops it without touching the requeued task
    assert runner.JobCallbacks(job).should_stop() is False
    callbacks = runner.JobCallbacks(job)
    callbacks.abandoned = True
    assert callbacks.should_stop() is True


@pytest.mark.django_db(transaction=True)
def test_a_progressing_task_is_not_stuck(alice, tiny_base):
    job = _running_job(alice, tiny_base, make_dataset(alice, chat_lines(4)))
    callbacks = runner.JobCallbacks(job)
    with services.Heartbeat(job.pk, interval=0.1, watch=callbacks, stuck_after=0.5):
        for _ in range(12):
            time.sleep(0.1)
            callbacks.progress_at = time.monotonic()  # what should_stop() does every step
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and not callbacks.abandoned and job.heartbeat_at is not None


@pytest.mark.django_db
def test_resume_drops_metrics_after_the_checkpoint(alice, bob, tiny_base, tmp_path):
    job = _running_job(alice, tiny_base, make_dataset(alice, chat_lines(4)))
    other = _running_job(bob, tiny_base, make_dataset(bob, chat_lines(4), name="b"))
    for j in (job, other):
        for step in range(1, 11):
            JobEvent.objects.create(job=j, type=JobEvent.Type.METRICS, message="m", data={"current_steps": step})
    (tmp_path / STATE_FILE).write_bytes(b"x")
    Checkpoint.objects.create(job=job, epoch=2, step=6, path=str(tmp_path), metrics={"current_steps": 6})
    states.job_event(job=job, level="warning", message="Worker lost", data={"requeue": "lost"})

    assert runner._resume_from(job) == tmp_path
    steps = list(job.events.filter(type="metrics").order_by("id").values_list("data__current_steps", flat=True))
    assert steps == [1, 2, 3, 4, 5, 6]
    assert job.events.order_by("-id").first().message == "Worker lost; resumed from step 6."
    job.refresh_from_db()
    assert job.progress == {"current_steps": 6}
    assert other.events.filter(type="metrics").count() == 10  # bob's chart is his own


@pytest.mark.django_db(transaction=True)
def test_a_checkpoint_that_cannot_be_fetched_fails_the_task(alice, tiny_base, tmp_path):
    job = _running_job(alice, tiny_base, make_dataset(alice, chat_lines(8)))
    Checkpoint.objects.create(job=job, epoch=1, step=3, path=str(tmp_path / "gone"), metrics={})
    with pytest.raises(CheckpointError):
        runner._resume_from(job)
    assert runner.job_run(job=FineTuningJob.objects.select_related("base_model").get(pk=job.pk)) == "failed"
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_code == "checkpoint_unreadable"
    assert "cannot resume" in job.error_message and "step 3" in job.error_message
    assert (
        not job.events.filter(message__startswith="Training started").exclude(message__contains="attempt").exists()
    )  # it never trained from scratch


@pytest.mark.django_db(transaction=True)
def test_a_training_error_shows_its_owner_no_server_paths(alice, tiny_base, monkeypatch, caplog):
    """The log keeps the full text for staff; the task's error cuts each server path to its last part."""
    from jobs.training import engine

    def broken(**run):
        raise OSError("[Errno 28] No space left on device: '/srv/console/var/scratch/job-7/output/adapter.safetensors'")

    monkeypatch.setattr(engine, "train", broken)
    job = _running_job(alice, tiny_base, make_dataset(alice, chat_lines(8)))
    assert runner.job_run(job=FineTuningJob.objects.select_related("base_model").get(pk=job.pk)) == "failed"
    job.refresh_from_db()
    assert job.error_code == "training_error"
    assert job.error_message == "OSError: [Errno 28] No space left on device: '…/adapter.safetensors'"
    assert "/srv/console/var/scratch/job-7" in caplog.text
