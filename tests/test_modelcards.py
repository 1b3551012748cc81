"""Model cards: the model square, base and fine-tuned card pages, honest capabilities, download, delete."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiKey
from common import storage
from jobs import services as job_services
from jobs.models import FineTuningJob
from modelcards.models import BaseModel, FineTunedModel

from .jobs_support import chat_lines, job_status, make_card, make_dataset, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _job(owner, base, suffix="card"):
    job, _ = job_services.job_create(
        user=owner, base_model=base, training_dataset=make_dataset(owner, chat_lines()), suffix=suffix
    )
    return job


def _adapter_folder(tmp_path, base_dir: Path) -> Path:
    """A real LoRA adapter folder for the tiny model, as training leaves it (this server's path inside)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "final"
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    peft_model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(folder))
    (folder / "training_result.json").write_text("{}")
    return folder


# ---------------------------------------------------------------- model square


def test_the_square_shows_base_models_with_what_this_server_can_do(alice_client, tiny_base):
    html = alice_client.get("/console/models/").content.decode()
    default = html.split('data-testid="model-smollm2-135m-instruct"')[1].split("</section>")[0]
    assert 'data-testid="can-train"' in default and "/console/jobs/create/?model=smollm2-135m-instruct" in default
    cogview = html.split('data-testid="model-cogview-3"')[1].split("</section>")[0]
    assert 'data-testid="cannot-train"' in cogview and "text models only" in cogview
    assert "glm-4-0520" not in html  # staff only
    assert 'data-testid="no-fine-tuned"' in html  # an empty state, with the way to make one


def test_the_square_filters_and_shows_only_your_fine_tuned_models(alice_client, alice, bob, tiny_base):
    mine = make_card(_job(alice, tiny_base, "mine"))
    theirs = make_card(_job(bob, tiny_base, "theirs"))
    html = alice_client.get("/console/models/").content.decode()
    assert mine.code in html and theirs.code not in html
    only_tuned = alice_client.get("/console/models/?kind=fine_tuned").content.decode()
    assert mine.code in only_tuned and 'data-testid="base-cards"' not in only_tuned
    only_base = alice_client.get("/console/models/?kind=base").content.decode()
    assert mine.code not in only_base and "smollm2-135m-instruct" in only_base
    dpo = alice_client.get("/console/models/?method=dpo").content.decode()
    assert mine.code not in dpo and "None of your fine-tuned models matches" in dpo
    images = alice_client.get("/console/models/?modality=image_generation").content.decode()
    assert "cogview-3" in images and "smollm2-135m-instruct" not in images and mine.code not in images


def test_the_square_pages_fine_tuned_models_in_a_fixed_number_of_queries(alice_client, alice, tiny_base):
    from django.db import connection

    job = _job(alice, tiny_base)
    FineTunedModel.objects.bulk_create(
        FineTunedModel(
            code=f"ft:tiny-test:bulk:{i:05d}",
            owner=alice,
            base_model=tiny_base,
            method="sft",
            training_type="lora",
            path="/nowhere",
        )
        for i in range(60)
    )
    assert job.pk
    with CaptureQueriesContext(connection) as first:
        html = alice_client.get("/console/models/?kind=fine_tuned").content.decode()
    assert html.count('data-testid="model-ft:tiny-test:bulk:') == 24 and "Page 1 of 3" in html
    with CaptureQueriesContext(connection) as third:
        html = alice_client.get("/console/models/?kind=fine_tuned&page=3").content.decode()
    assert html.count('data-testid="model-ft:tiny-test:bulk:') == 12
    assert len(third) == len(first)


# ---------------------------------------------------------------- honest capabilities


def _local_model(tmp_path, tiny_model_dir, **config_changes) -> Path:
    folder = tmp_path / "weights"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _base(code: str, folder: Path, **extra) -> BaseModel:
    return BaseModel.objects.create(
        code=code,
        display_name=code,
        family="test",
        methods=["sft", "dpo"],
        training_types=["lora", "full"],
        weights_location=str(folder),
        **extra,
    )


def test_a_model_that_needs_remote_code_cannot_be_chosen_and_says_why(
    alice, alice_client, tmp_path, tiny_model_dir, tiny_base
):
    remote = _base("remote-code", _local_model(tmp_path, tiny_model_dir, auto_map={"AutoModel": "x.Y"}))
    caps = remote.capabilities()
    assert not caps.can_train and not caps.serve and "trust_remote_code" in caps.train_reason
    form = alice_client.get("/console/jobs/create/").content.decode()
    assert '<option value="remote-code"' not in form and "remote-code</code>: Its code ships" in form
    with pytest.raises(job_services.JobInputError) as refused:
        _job(alice, remote)
    assert refused.value.code == "unsupported_model" and "trust_remote_code" in refused.value.message


def test_a_model_too_big_for_the_node_is_refused_with_the_estimate(alice, tmp_path, tiny_model_dir, settings):
    settings.TRAINING_NODE_MEMORY_GB = 16
    big = _base("big-model", _local_model(tmp_path, tiny_model_dir), parameters=2_000_000_000)
    caps = big.capabilities()
    assert caps.lora and not caps.full  # LoRA's frozen weights fit in 16 GiB; AdamW's 16 bytes a parameter do not
    assert (
        "Needs about 37.3 GiB of memory to train (2,000,000,000 parameters); the training node has 16.0 GiB"
        in caps.full.reason
    )
    with pytest.raises(job_services.JobInputError) as refused:
        _job_full = job_services.job_create(
            user=alice, base_model=big, training_type="full", training_dataset=make_dataset(alice, chat_lines())
        )
        assert _job_full is None
    assert refused.value.param == "training_type" and "37.3 GiB" in refused.value.message


def test_the_catalog_says_why_each_model_cannot_be_used_here(db):
    why = {m.code: m.capabilities() for m in BaseModel.objects.all()}
    assert why["smollm2-135m-instruct"].can_train and why["smollm2-135m-instruct"].serve
    assert "text models only" in why["glm-4v"].train_reason and "text models only" in why["cogview-3"].train_reason
    assert "no causal language model for the chatglm architecture" in why["chatglm3-6b"].train_reason
    assert "Weights missing" in why["glm-4-9b"].train_reason and why["glm-4-9b"].architecture == "glm4"


@pytest.mark.django_db(transaction=True)
def test_the_api_refuses_what_cannot_work_with_the_reason(live_server, alice, alice_key):
    from zhipuai import APIRequestFailedError, ZhipuAI

    sdk = ZhipuAI(api_key=alice_key, base_url=f"{live_server.url}/api/paas/v4", max_retries=0)
    dataset = make_dataset(alice, chat_lines())
    with pytest.raises(APIRequestFailedError) as refused:
        sdk.fine_tuning.jobs.create(model="cogview-3", training_file=dataset.public_id)
    assert "text models only" in refused.value.response.json()["error"]["message"]
    listed = {m["id"]: m for m in sdk.get("/models", cast_type=object)["data"]}
    assert listed["cogview-3"]["capabilities"]["sft"]["ok"] is False
    assert listed["smollm2-135m-instruct"]["capabilities"]["lora"] == {"ok": True, "reason": ""}


# ---------------------------------------------------------------- fine-tuned card


def test_the_fine_tuned_card_shows_what_was_trained_and_how_to_call_it(alice_client, alice, bob, tiny_base):
    job = _job(alice, tiny_base)
    FineTuningJob.objects.filter(pk=job.pk).update(status="succeeded")
    card = make_card(
        job,
        hyperparameters={"n_epochs": 3, "batch_size": 4},
        metrics={"final_eval_loss": 0.1234},
        trained_tokens=12345,
        cost="0.1235",
    )
    html = alice_client.get(f"/console/models/{card.code}/").content.decode()
    assert f'data-testid="model-code">{card.code}<' in html and 'data-copy="#model-code"' in html
    assert "n_epochs <strong>3</strong>" in html and "0.1234" in html and "12,345" in html
    assert f'href="/console/datasets/{job.training_dataset.public_id}/"' in html  # the training section
    assert f'href="/console/jobs/{job.public_id}/"' in html
    samples = html.split('data-testid="code-samples"')[1]
    assert f"model=&quot;{card.code}&quot;" in samples and "http://testserver/api/paas/v4" in samples
    assert "from zhipuai import ZhipuAI" in samples and "from openai import OpenAI" in samples
    # bob: no page, no download, no delete
    bob_client = type(alice_client)()
    bob_client.force_login(bob)
    for url in ("", "download/", "delete/"):
        assert bob_client.get(f"/console/models/{card.code}/{url}").status_code == 404
    assert bob_client.post(f"/console/models/{card.code}/delete/").status_code == 404
    assert FineTunedModel.objects.get(pk=card.pk).deleted_at is None


def test_the_adapter_downloads_and_loads_with_peft_anywhere(alice_client, alice, tiny_base, tiny_model_dir, tmp_path):
    BaseModel.objects.filter(pk=tiny_base.pk).update(public_name=str(tiny_model_dir))  # stands in for a hub id
    card = make_card(_job(alice, tiny_base), path=str(_adapter_folder(tmp_path, tiny_model_dir)))
    page = alice_client.get(f"/console/models/{card.code}/").content.decode()
    assert 'data-testid="download"' in page
    response = alice_client.get(f"/console/models/{card.code}/download/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = {Path(n).name for n in archive.namelist()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert "training_result.json" not in names
    folder = tmp_path / "downloaded"
    archive.extractall(folder)
    adapter = next(folder.iterdir())
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    # A fresh Python process, knowing nothing of this server, loads base + adapter from the folder alone.
    script = (
        "import sys, torch\n"
        "from peft import AutoPeftModelForCausalLM\n"
        "model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "lora = [n for n, _ in model.named_parameters() if 'lora_B' in n]\n"
        "print(len(lora), float(next(p for n, p in model.named_parameters() if 'lora_B' in n).mean()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(adapter)], capture_output=True, text=True, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    count, mean = done.stdout.split()
    assert int(count) == 4 and float(mean) == pytest.approx(0.01)


@pytest.mark.django_db(transaction=True)
def test_delete_lists_what_goes_then_the_model_is_gone_everywhere(
    live_server, alice, alice_key, tiny_base, tiny_model_dir, tmp_path, client
):
    import httpx

    client.force_login(alice)
    job = _job(alice, tiny_base)
    FineTuningJob.objects.filter(pk=job.pk).update(status="succeeded")
    card = make_card(job, path=str(_adapter_folder(tmp_path, tiny_model_dir)))
    confirm = client.get(f"/console/models/{card.code}/delete/").content.decode()
    listed = confirm.split('data-testid="delete-consequences"')[1].split("</ul>")[0]
    assert f"The model {card.code}: calls with this code will fail." in listed and "files (" in listed
    response = client.post(f"/console/models/{card.code}/delete/")
    assert response.status_code == 302 and response["Location"] == "/console/models/"
    assert not Path(card.path).exists()
    assert client.get(f"/console/models/{card.code}/").status_code == 404
    assert f'href="/console/models/{card.code}/"' not in client.get("/console/models/").content.decode()
    models = httpx.get(f"{live_server.url}/api/paas/v4/models", headers={"Authorization": f"Bearer {alice_key}"})
    assert card.code not in {m["id"] for m in models.json()["data"]}
    again = httpx.delete(
        f"{live_server.url}/api/paas/v4/fine_tuning/fine_tuned_models/{card.code}",
        headers={"Authorization": f"Bearer {alice_key}"},
    )
    assert again.status_code == 404
    assert FineTuningJob.objects.filter(result=card).exists()  # the task stays, for the record
    assert ">deleted</span>" in client.get(f"/console/jobs/{job.public_id}/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_api_and_admin_delete_through_the_same_service(
    live_server, alice, bob, alice_key, tiny_base, admin_client, tmp_path, tiny_model_dir
):
    import httpx

    by_api = make_card(_job(alice, tiny_base, "api"), path=str(_adapter_folder(tmp_path / "a", tiny_model_dir)))
    _key, bob_key = ApiKey.create_for(user=bob, name="bob")
    url = f"{live_server.url}/api/paas/v4/fine_tuning/fine_tuned_models/{by_api.code}"
    assert httpx.delete(url, headers={"Authorization": f"Bearer {bob_key}"}).status_code == 404
    gone = httpx.delete(url, headers={"Authorization": f"Bearer {alice_key}"}).json()
    assert gone["delete_status"] == "deleted" and not Path(by_api.path).exists()
    by_admin = make_card(_job(alice, tiny_base, "adm"), path=str(_adapter_folder(tmp_path / "b", tiny_model_dir)))
    response = admin_client.post(
        "/admin/modelcards/finetunedmodel/",
        {"action": "delete_selected", "_selected_action": [by_admin.pk], "post": "yes"},
    )
    assert response.status_code == 302
    by_admin.refresh_from_db()
    assert by_admin.deleted_at is not None and not Path(by_admin.path).exists()  # the row stays, marked deleted


def test_admin_cannot_delete_a_running_task(admin_client, alice, tiny_base):
    job = _job(alice, tiny_base)
    FineTuningJob.objects.filter(pk=job.pk).update(status="running")
    admin_client.post(
        "/admin/jobs/finetuningjob/", {"action": "delete_selected", "_selected_action": [job.pk], "post": "yes"}
    )
    assert FineTuningJob.objects.filter(pk=job.pk).exists()


# ---------------------------------------------------------------- the whole flow, really trained


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_trained_model_gets_a_card_from_which_it_downloads_and_deletes(
    live_server, alice, tiny_base, tiny_model_dir, training_worker, client
):
    BaseModel.objects.filter(pk=tiny_base.pk).update(public_name=str(tiny_model_dir))
    job, _ = job_services.job_create(
        user=alice,
        base_model=tiny_base,
        suffix="flow",
        training_dataset=make_dataset(alice, chat_lines(24)),
        hyperparameters={"n_epochs": 2, "batch_size": 4},
    )
    wait_for(
        lambda: job_status(job.public_id) in {"succeeded", "failed", "cancelled"}, timeout=180, what="the task to end"
    )
    assert job_status(job.public_id) == "succeeded"
    client.force_login(alice)
    square = client.get("/console/models/?kind=fine_tuned").content.decode()
    assert f'href="/console/models/{job.fine_tuned_model}/"' in square
    card_page = client.get(f"/console/models/{job.fine_tuned_model}/").content.decode()
    assert 'data-testid="loss-chart"' in card_page and 'data-testid="sample-zhipuai"' in card_page
    archive = zipfile.ZipFile(
        io.BytesIO(b"".join(client.get(f"/console/models/{job.fine_tuned_model}/download/").streaming_content))
    )
    assert any(n.endswith("adapter_model.safetensors") for n in archive.namelist())
    client.post(f"/console/models/{job.fine_tuned_model}/delete/")
    assert client.get(f"/console/models/{job.fine_tuned_model}/").status_code == 404
    assert not storage.folder_exists(FineTunedModel.objects.get(code=job.fine_tuned_model).path)


def test_is_usable_by_says_what_usable_by_selects(alice):
    """The gateway asks one row (``is_usable_by``); the pages select rows (``usable_by``): the same rule."""
    from accounts.models import User
    from modelcards.models import BaseModel

    staff = User.objects.create_user("staffer", password="x", is_staff=True)
    for everyone, active in ((True, True), (False, True), (True, False), (False, False)):
        base = BaseModel.objects.create(
            code=f"rule-{everyone:d}{active:d}",
            display_name="rule",
            family="test",
            availability="everyone" if everyone else "annual_private",
            is_active=active,
        )
        for user in (alice, staff):
            selected = BaseModel.objects.usable_by(user).filter(pk=base.pk).exists()
            assert base.is_usable_by(user) is selected, (base.code, user.username)
