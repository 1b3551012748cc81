"""Pause and resume (issue 19, item 3): a pause saves a checkpoint of the step reached and frees the worker; resume
queues the task again and it continues from that checkpoint step for step; in the page, the API (the openai SDK's
``pause`` / ``resume``) and the events."""

from __future__ import annotations

import pytest

from jobs import services, states
from jobs.models import FineTuningJob, JobEvent, JobStatus

from .jobs_support import chat_lines, job_status, make_dataset, wait_for


def _queued(owner, base, suffix="pause"):
    job, _ = services.job_create(
        user=owner, base_model=base, training_dataset=make_dataset(owner, chat_lines()), suffix=suffix
    )
    FineTuningJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED)
    job.refresh_from_db()
    return job


def _messages(job) -> list[str]:
    return list(JobEvent.objects.filter(job=job).order_by("id").values_list("message", flat=True))


@pytest.mark.django_db
def test_a_queued_task_pauses_at_once_resumes_into_the_queue_and_cancels_while_paused(alice, tiny_base):
    job = _queued(alice, tiny_base)
    assert job.can_pause
    assert states.job_pause(job=job).status == JobStatus.PAUSED
    assert states.job_pause(job=job).status == JobStatus.PAUSED  # asked twice: nothing more
    assert "Paused before it started; resume puts it back in the queue." in _messages(job)
    resumed = states.job_resume(job=job)
    assert resumed.status == JobStatus.QUEUED and resumed.pause_requested_at is None
    assert "Resumed; back in the queue, it will continue from the start." in _messages(job)
    states.job_pause(job=job)
    cancelled = states.job_cancel(job=job)
    assert cancelled.status == JobStatus.CANCELLED and "Cancelled while paused." in _messages(job)
    with pytest.raises(states.JobNotPausable, match="queued or running; this one is cancelled"):
        states.job_pause(job=job)
    with pytest.raises(states.JobNotPausable, match="Only a paused task can be resumed"):
        states.job_resume(job=job)


@pytest.mark.django_db
def test_a_running_task_is_asked_to_pause_and_the_page_follows(alice_client, alice, bob, tiny_base):
    job = _queued(alice, tiny_base)
    FineTuningJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    page = alice_client.get(f"/console/jobs/{job.public_id}/").content.decode()
    assert 'data-testid="pause"' in page and 'data-testid="resume"' not in page
    bob_client = type(alice_client)()
    bob_client.force_login(bob)
    assert bob_client.post(f"/console/jobs/{job.public_id}/pause/").status_code == 404
    assert FineTuningJob.objects.get(pk=job.pk).pause_requested_at is None
    response = alice_client.post(f"/console/jobs/{job.public_id}/pause/", follow=True)
    assert "it saves a checkpoint of the step it reached" in response.content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.pause_requested_at is not None  # the runner ends it paused
    assert 'data-testid="pausing"' in response.content.decode()
    assert "Pause requested; the training saves a checkpoint and stops." in _messages(job)
    assert alice_client.get(f"/console/jobs/{job.public_id}/resume/").status_code == 405  # POST only
    response = alice_client.post(f"/console/jobs/{job.public_id}/resume/", follow=True)
    assert "Only a paused task can be resumed" in response.content.decode()


def _epoch_losses(job: FineTuningJob) -> list[tuple[float, float]]:
    return [
        (e.data["loss"], e.data["eval_loss"])
        for e in JobEvent.objects.filter(job=job, message__regex=r"^Epoch \d+/\d+ finished$").order_by("id")
    ]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_paused_through_the_openai_sdk_it_frees_the_worker_and_resumes_step_for_step(
    live_server, alice_key, alice, tiny_base, training_worker
):
    from openai import BadRequestError, OpenAI

    client = OpenAI(api_key=alice_key, base_url=f"{live_server.url}/api/paas/v4")
    dataset = make_dataset(alice, chat_lines(240))
    settings = {
        "model": "tiny-test",
        "training_file": dataset.public_id,
        "seed": 11,
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 3}},
        },
    }
    straight = client.fine_tuning.jobs.create(**settings)
    wait_for(lambda: job_status(straight.id) == "succeeded", timeout=240, what="the uninterrupted task")

    paused = client.fine_tuning.jobs.create(**settings)
    wait_for(
        lambda: (FineTuningJob.objects.get(public_id=paused.id).progress or {}).get("current_steps", 0) >= 3,
        timeout=120,
        interval=0.05,
        what="the task's first steps",
    )
    assert client.fine_tuning.jobs.pause(paused.id).id == paused.id
    wait_for(lambda: job_status(paused.id) == "paused", timeout=60, what="the pause")
    row = FineTuningJob.objects.get(public_id=paused.id)
    [event] = JobEvent.objects.filter(job=row, message__startswith="Paused at step")
    step = event.data["paused_at_step"]
    assert 3 <= step < 240 and row.worker == ""
    assert row.checkpoints.order_by("-step").first().step == step  # the step reached was saved
    with pytest.raises(BadRequestError):
        client.fine_tuning.jobs.pause(straight.id)  # finished: nothing to pause
    # The worker is free: another task runs to the end while this one is paused.
    other = client.fine_tuning.jobs.create(
        **{
            **settings,
            "seed": 12,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 1}},
            },
        }
    )
    wait_for(lambda: job_status(other.id) == "succeeded", timeout=180, what="a task run during the pause")
    assert job_status(paused.id) == "paused"

    assert client.fine_tuning.jobs.resume(paused.id).status == "queued"
    wait_for(lambda: job_status(paused.id) == "succeeded", timeout=240, what="the resumed task")
    messages = _messages(row)
    resumed_from = f"Resumed; back in the queue, it will continue from its checkpoint at step {step} "
    assert any(m.startswith(resumed_from) for m in messages), messages
    assert any(m.startswith(f"Resumed from step {step}") for m in messages), messages
    # Step for step: the epochs end with the losses of the task that was never paused.
    expected = _epoch_losses(FineTuningJob.objects.get(public_id=straight.id))
    got = _epoch_losses(row)
    assert len(got) == len(expected) == 2
    for (loss, eval_loss), (want, want_eval) in zip(got, expected, strict=True):
        assert loss == pytest.approx(want, rel=1e-5) and eval_loss == pytest.approx(want_eval, rel=1e-5)
    events = [e.message for e in client.fine_tuning.jobs.list_events(paused.id, limit=100)]  # every page
    assert any(m.startswith("Paused at step") for m in events)
