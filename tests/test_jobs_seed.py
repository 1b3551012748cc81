"""Reproducible tasks (issue 19, item 2): a seed in the form and the API, recorded on the task (chosen at random
when none is given); two tasks with the same data, settings and seed train the same losses and the same adapter on
the same machine, through the real training worker."""

from __future__ import annotations

import httpx
import pytest
from safetensors.torch import load_file

from common import storage
from jobs.models import FineTunedModel, FineTuningJob, JobEvent

from .jobs_support import chat_lines, job_status, make_dataset, wait_for


def _form(dataset, **extra) -> dict:
    return {
        "base_model": "tiny-test",
        "method": "sft",
        "training_type": "lora",
        "training_dataset": dataset.pk,
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "suffix": "",
        **extra,
    }


@pytest.mark.django_db
def test_the_form_takes_a_seed_and_the_page_shows_it(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    html = alice_client.get("/console/jobs/create/").content.decode()
    assert 'name="seed"' in html and "chosen at random and recorded" in html
    response = alice_client.post("/console/jobs/create/", _form(dataset, seed="-3"))
    assert response.status_code == 200 and "greater than or equal to 0" in response.content.decode()
    assert not FineTuningJob.objects.exists()

    response = alice_client.post("/console/jobs/create/", _form(dataset, seed="31337"))
    job = FineTuningJob.objects.get()
    assert response.status_code == 302 and job.seed == 31337
    assert 'data-testid="seed">31337<' in alice_client.get(f"/console/jobs/{job.public_id}/").content.decode()

    alice_client.post("/console/jobs/create/", _form(dataset))  # none given: one is chosen and recorded
    chosen = FineTuningJob.objects.exclude(pk=job.pk).get()
    assert chosen.seed is not None and 0 <= chosen.seed <= 2**31 - 1
    detail = alice_client.get(f"/console/jobs/{chosen.public_id}/").content.decode()
    assert f'data-testid="seed">{chosen.seed}<' in detail


def _train(live_server, alice_key, dataset, seed: int) -> FineTuningJob:
    response = httpx.post(
        f"{live_server.url}/api/paas/v4/fine_tuning/jobs",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={
            "model": "tiny-test",
            "training_file": dataset.public_id,
            "seed": seed,
            "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 3},
        },
    )
    assert response.status_code == 200, response.text
    public_id = response.json()["id"]
    assert response.json()["seed"] == seed
    wait_for(lambda: job_status(public_id) in {"succeeded", "failed", "cancelled"}, timeout=180, what=public_id)
    job = FineTuningJob.objects.get(public_id=public_id)
    assert job.status == "succeeded", job.error_message
    return job


def _epoch_losses(job: FineTuningJob) -> list[tuple[float, float]]:
    """(last step's training loss, validation loss) at each epoch's end, as the engine logged them."""
    return [
        (e.data["loss"], e.data["eval_loss"])
        for e in JobEvent.objects.filter(job=job, message__regex=r"^Epoch \d+/\d+ finished$").order_by("id")
    ]


def _adapter(job: FineTuningJob) -> dict:
    card = FineTunedModel.objects.get(job=job)
    return load_file(str(storage.local_path(f"{card.path}/adapter_model.safetensors")))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_same_data_settings_and_seed_train_the_same_losses_and_adapter(
    live_server, alice_key, alice, tiny_base, training_worker
):
    dataset = make_dataset(alice, chat_lines(16))  # no validation file: the automatic split follows the seed too
    first, second, other = (_train(live_server, alice_key, dataset, seed) for seed in (2024, 2024, 7))

    losses = _epoch_losses(first)
    assert len(losses) == 2 and all(loss > 0 and eval_loss > 0 for loss, eval_loss in losses)
    assert _epoch_losses(second) == losses  # equal, not approximately: the same computation
    assert (
        FineTunedModel.objects.get(job=second).metrics["final_eval_loss"]
        == FineTunedModel.objects.get(job=first).metrics["final_eval_loss"]
    )
    a, b = _adapter(first), _adapter(second)
    assert a.keys() == b.keys() and len(a) > 0
    assert all((a[name] == b[name]).all() for name in a), [n for n in a if not (a[n] == b[n]).all()]

    # Another seed, the rest the same: another split, initialisation and order, so other losses and weights.
    assert _epoch_losses(other) != losses
    c = _adapter(other)
    assert any(not (a[name] == c[name]).all() for name in a)
