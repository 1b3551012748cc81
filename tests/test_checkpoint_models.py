"""Every checkpoint a model (issue 19, item 4): when a LoRA task succeeds, each kept epoch checkpoint becomes
``<code>:ckpt-step-<N>`` (listed on the result's card, callable, deployable, downloadable), older ones are pruned,
and the owner can promote one to be the result's weights and go back to the final ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deployments.models import Deployment, DeploymentStatus
from jobs.checkpoints import checkpoints_publish
from jobs.models import Checkpoint
from modelcards import services
from modelcards.models import FineTunedModel

from .jobs_support import make_card
from .test_modelcards import _adapter_folder, _job


def _checkpoint_folder(tmp_path: Path, adapter: Path, epoch: int) -> Path:
    """An epoch checkpoint as the engine leaves it: a servable adapter plus the resume state."""
    folder = tmp_path / "checkpoints" / f"epoch-{epoch}"
    shutil.copytree(adapter, folder)
    (folder / "training_state.pt").write_bytes(b"state")
    (folder / "trainable.safetensors").write_bytes(b"tensors")
    return folder


def _succeeded_task(alice, tiny_base, tiny_model_dir, tmp_path, epochs: int = 3, training_type: str = "lora"):
    """A task with an epoch checkpoint per epoch (and a mid-epoch one), and its result card, as the runner
    leaves them just before publishing the checkpoints."""
    adapter = _adapter_folder(tmp_path, tiny_model_dir)
    job = _job(alice, tiny_base)
    card = make_card(job, path=str(adapter), training_type=training_type)
    for epoch in range(1, epochs + 1):
        Checkpoint.objects.create(
            job=job,
            epoch=epoch,
            step=4 * epoch,
            path=str(_checkpoint_folder(tmp_path, adapter, epoch)),
            metrics={"current_steps": 4 * epoch, "loss": 2.0 / epoch, "eval_loss": 1.0 + epoch % 2},
        )
    Checkpoint.objects.create(
        job=job, epoch=epochs + 1, step=4 * epochs + 2, path=str(tmp_path / "checkpoints" / f"step-{4 * epochs + 2}")
    )
    return job, card


@pytest.mark.django_db
def test_a_succeeded_lora_task_publishes_its_newest_checkpoints_as_models(
    alice, tiny_base, tiny_model_dir, tmp_path, settings, django_capture_on_commit_callbacks
):
    settings.TRAINING_CHECKPOINTS_KEPT = 2
    job, card = _succeeded_task(alice, tiny_base, tiny_model_dir, tmp_path)
    with django_capture_on_commit_callbacks(execute=True):
        models = checkpoints_publish(job=job, card=card)

    assert [m.code for m in models] == [f"{job.fine_tuned_model}:ckpt-step-8", f"{job.fine_tuned_model}:ckpt-step-12"]
    second = models[0]
    assert second.checkpoint_of == card and second.epoch == 2 and second.step == 8 and second.owner == alice
    assert second.metrics["final_loss"] == 1.0 and second.metrics["final_eval_loss"] == 1.0
    assert second.hyperparameters == card.hyperparameters and second.training_type == "lora"
    # The oldest is pruned: its weights go, its row (and losses) stay for checkpoints.list.
    oldest = job.checkpoints.get(epoch=1)
    assert oldest.pruned_at is not None and oldest.model is None and not Path(oldest.path).exists()
    # The kept ones are model folders now: no resume state left in them.
    kept = Path(job.checkpoints.get(epoch=3).path)
    assert (kept / "adapter_config.json").exists()
    assert not (kept / "training_state.pt").exists() and not (kept / "trainable.safetensors").exists()
    assert job.checkpoints.get(epoch=3).model == models[1]
    # The square lists results only; the card lists its checkpoints.
    assert list(FineTunedModel.objects.live().results()) == [card]


@pytest.mark.django_db
def test_a_full_parameter_tasks_checkpoints_stay_resume_state(alice, tiny_base, tiny_model_dir, tmp_path):
    job, card = _succeeded_task(alice, tiny_base, tiny_model_dir, tmp_path, epochs=2, training_type="full")
    assert checkpoints_publish(job=job, card=card) == []
    assert not FineTunedModel.objects.filter(checkpoint_of=card).exists()


@pytest.mark.django_db
def test_the_card_lists_checkpoints_promote_and_restore(
    alice_client, alice, bob, tiny_base, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks
):
    job, card = _succeeded_task(alice, tiny_base, tiny_model_dir, tmp_path)
    with django_capture_on_commit_callbacks(execute=True):
        first, second, third = checkpoints_publish(job=job, card=card)
    final_path = card.path

    page = alice_client.get(f"/console/models/{card.code}/").content.decode()
    assert page.count('data-testid="checkpoint-row"') == 3 and first.code in page
    square = alice_client.get("/console/models/").content.decode()
    assert card.code in square and first.code not in square
    detail = alice_client.get(f"/console/models/{second.code}/").content.decode()
    assert 'data-testid="checkpoint-of"' in detail and "step 8, end of epoch 2" in detail
    assert 'data-testid="promote"' in detail and "Download zip" in detail
    zipped = alice_client.get(f"/console/models/{second.code}/download/")
    names = {n.split("/", 1)[1] for n in _zip_names(zipped)}
    assert "adapter_config.json" in names and "training_state.pt" not in names

    # bob sees none of it and can promote nothing.
    from django.test import Client

    client = Client()
    client.force_login(bob)
    assert client.get(f"/console/models/{second.code}/").status_code == 404
    assert client.post(f"/console/models/{second.code}/promote/").status_code == 404
    assert client.post(f"/console/models/{card.code}/restore/").status_code == 404

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(f"/console/models/{second.code}/promote/", follow=True)
    card.refresh_from_db()
    assert card.path == second.path and card.final_path == final_path and card.promoted_from == second
    html = response.content.decode()
    assert f"now serves the weights of {second.code}" in html and 'data-testid="promoted-from"' in html

    # A promoted checkpoint cannot be deleted while its result serves it.
    response = alice_client.post(f"/console/models/{second.code}/delete/", follow=True)
    assert "is promoted" in response.content.decode()
    second.refresh_from_db()
    assert second.deleted_at is None

    # A running deployment of the result holds the weights it loaded: a promotion waits for it.
    Deployment.objects.create(
        owner=alice, code="dep-x", fine_tuned_model=card, status=DeploymentStatus.RUNNING, desired_instances=1
    )
    response = alice_client.post(f"/console/models/{third.code}/promote/", follow=True)
    assert "Its deployment dep-x serves its current weights" in response.content.decode()
    card.refresh_from_db()
    assert card.promoted_from == second
    Deployment.objects.filter(code="dep-x").update(status=DeploymentStatus.CANCELLED)

    alice_client.post(f"/console/models/{card.code}/restore/")
    card.refresh_from_db()
    assert card.path == final_path and card.final_path == "" and card.promoted_from is None


@pytest.mark.django_db
def test_deleting_the_result_deletes_its_checkpoint_models(
    alice, tiny_base, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks
):
    job, card = _succeeded_task(alice, tiny_base, tiny_model_dir, tmp_path, epochs=2)
    with django_capture_on_commit_callbacks(execute=True):
        first, second = checkpoints_publish(job=job, card=card)
        services.fine_tuned_model_promote(checkpoint=first)
    preview = services.fine_tuned_model_delete_preview(model=card)
    assert any(first.code in line and second.code in line for line in preview)
    with django_capture_on_commit_callbacks(execute=True):
        services.fine_tuned_model_delete(model=card)
    assert not FineTunedModel.objects.live().exists()
    assert not Path(first.path).exists() and not Path(second.path).exists()


def _zip_names(response) -> list[str]:
    import io
    import zipfile

    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()


@pytest.mark.django_db
def test_the_playground_offers_checkpoints_beside_their_base_and_compare_shows_the_verdict(
    alice_client, alice, tiny_base, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks
):
    from experience.compare import evaluation_rows
    from experience.models import Evaluation

    job, card = _succeeded_task(alice, tiny_base, tiny_model_dir, tmp_path, epochs=2)
    with django_capture_on_commit_callbacks(execute=True):
        first, _second = checkpoints_publish(job=job, card=card)
    html = alice_client.get(f"/console/playground/?model={first.code}").content.decode()
    assert f'<option value="{first.code}" selected>{first.code} (checkpoint)' in html
    # Side by side with its base model by default, as a fine-tune is.
    assert f'<option value="{tiny_base.code}" selected>' in html

    Evaluation.objects.create(
        job=job,
        model=card,
        status="succeeded",
        total=12,
        summary={"verdict": {"text": "Better than base on 10 of 12 prompts"}, "best": first.code},
    )
    rows = dict(evaluation_rows([job]))
    assert rows["Verdict"] == ["Better than base on 10 of 12 prompts"]
    assert rows["Best of its checkpoints and result"] == [first.code]


@pytest.mark.django_db
def test_a_checkpoints_card_shows_its_line_of_the_results_evaluation(
    alice_client, alice, tiny_base, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks
):
    from experience.models import Evaluation

    job, card = _succeeded_task(alice, tiny_base, tiny_model_dir, tmp_path, epochs=2)
    with django_capture_on_commit_callbacks(execute=True):
        first, second = checkpoints_publish(job=job, card=card)
    html = alice_client.get(f"/console/models/{first.code}/").content.decode()
    assert "Checkpoints are evaluated with their result; it has no evaluation yet." in html

    models = [
        {"code": tiny_base.code, "role": "base", "f1": 0.1, "exact": 0.0},
        {"code": first.code, "role": "checkpoint", "step": 4, "f1": 0.7, "exact": 0.5},
        {"code": second.code, "role": "checkpoint", "step": 8, "f1": 0.6, "exact": 0.5},
        {"code": card.code, "role": "result", "f1": 0.65, "exact": 0.5},
    ]
    Evaluation.objects.create(
        job=job,
        model=card,
        status="succeeded",
        total=12,
        summary={"models": models, "best": first.code, "verdict": {"text": "Better than base on 10 of 12 prompts"}},
    )
    html = alice_client.get(f"/console/models/{first.code}/").content.decode()
    section = html[html.index('data-testid="checkpoint-evaluation"') :]
    assert 'data-testid="this-checkpoint"' in section and second.code not in section.split("</table>")[0]
    assert "0.70" in section and "best" in section and "Better than base on 10 of 12 prompts" in section
