"""The merged download of a LoRA fine-tune (issue 19, item 8): built once on a worker, stored, streamed as a zip
that loads with AutoModelForCausalLM anywhere and answers as base + adapter do; owners only; failures say why."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from common import storage
from deployments import exports
from deployments.models import ExportStatus, MergedExport
from modelcards.models import BaseModel
from modelcards.services import fine_tuned_model_delete

from .jobs_support import make_card
from .test_modelcards import _adapter_folder, _job

pytestmark = pytest.mark.django_db

PROMPT_IDS = [[1, 5, 9, 2, 7, 3]]


def _lora_card(alice, tiny_base, tiny_model_dir, tmp_path):
    return make_card(_job(alice, tiny_base), path=str(_adapter_folder(tmp_path, tiny_model_dir)))


def _logits(base: Path, adapter: Path) -> tuple[list[float], list[float]]:
    """The next-token logits of base + adapter (peft), and of the base alone."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor(PROMPT_IDS)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = model(ids).logits[0, -1, :8].tolist()
        tuned = PeftModel.from_pretrained(model, str(adapter)).eval()
        return tuned(ids).logits[0, -1, :8].tolist(), base_logits


def _zip_of(response) -> zipfile.ZipFile:
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def test_the_merged_download_loads_without_peft_and_answers_as_base_plus_adapter(
    alice_client, alice, tiny_base, tiny_model_dir, tmp_path
):
    card = _lora_card(alice, tiny_base, tiny_model_dir, tmp_path)
    page = alice_client.get(f"/console/models/{card.code}/").content.decode()
    assert 'data-testid="card-merged-export"' in page and 'data-testid="merged-build"' in page
    assert alice_client.get(f"/console/deployments/exports/{card.code}/download/").status_code == 404  # not built

    section = alice_client.post(f"/console/deployments/exports/{card.code}/", HTTP_HX_REQUEST="true").content.decode()
    export = MergedExport.objects.get(fine_tuned_model=card)
    assert export.status == ExportStatus.QUEUED and "Waiting for a worker" in section and "every 2s" in section
    polled = alice_client.get(f"/console/deployments/exports/{card.code}/", HTTP_HX_REQUEST="true")
    assert polled.status_code == 200  # still polling while it is queued
    again = exports.merged_export_request(model=card)
    assert again.pk == export.pk and again.status == ExportStatus.QUEUED  # asking twice builds once

    built = exports.merged_export_build(export_id=export.pk)  # what the worker's task runs
    assert built.status == ExportStatus.READY and built.size_bytes > 0, built.error
    assert exports.merged_export_build(export_id=export.pk) is None  # a redelivered task does nothing
    done = alice_client.get(f"/console/deployments/exports/{card.code}/", HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and 'data-testid="merged-download"' in done.content.decode()  # polling stops

    archive = _zip_of(alice_client.get(f"/console/deployments/exports/{card.code}/download/"))
    names = {Path(n).name for n in archive.namelist()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names and "adapter_config.json" not in names
    folder = tmp_path / "downloaded"
    archive.extractall(folder)
    merged = next(folder.iterdir())
    assert merged.name == f"{card.code.replace(':', '-')}-merged"
    # A fresh process, knowing nothing of this server nor of peft, loads it; it answers as base + adapter.
    script = (
        "import sys, json, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()\n"
        "AutoTokenizer.from_pretrained(sys.argv[1])\n"
        f"ids = torch.tensor({PROMPT_IDS})\n"
        "with torch.no_grad():\n"
        "    print(json.dumps(model(ids).logits[0, -1, :8].tolist()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script, str(merged)], capture_output=True, text=True, env=env, timeout=180
    )
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    ours, base = _logits(tiny_model_dir, Path(card.path))
    assert theirs == pytest.approx(ours, abs=1e-4) and theirs != pytest.approx(base, abs=1e-4)


def test_only_the_owner_builds_and_downloads_and_only_lora_fine_tunes(
    alice_client, alice, bob, tiny_base, tiny_model_dir, tmp_path
):
    bob_client = type(alice_client)()
    bob_client.force_login(bob)
    card = _lora_card(alice, tiny_base, tiny_model_dir, tmp_path)
    exports.merged_export_build(export_id=exports.merged_export_request(model=card).pk)
    assert alice_client.get(f"/console/deployments/exports/{card.code}/download/").status_code == 200
    for url in ("", "download/"):
        assert bob_client.get(f"/console/deployments/exports/{card.code}/{url}").status_code == 404
    assert bob_client.post(f"/console/deployments/exports/{card.code}/").status_code == 404
    assert 'data-testid="card-merged-export"' not in bob_client.get(f"/console/models/{card.code}/").content.decode()
    full = make_card(_job(alice, tiny_base, suffix="full"), path=str(tiny_model_dir), training_type="full")
    assert alice_client.post(f"/console/deployments/exports/{full.code}/").status_code == 404
    assert 'data-testid="card-merged-export"' not in alice_client.get(f"/console/models/{full.code}/").content.decode()
    with pytest.raises(exports.ExportNotNeeded):
        exports.merged_export_request(model=full)


def test_a_failed_build_says_why_and_can_be_tried_again(
    alice_client, alice, tiny_base, tiny_model_dir, tmp_path, settings
):
    card = _lora_card(alice, tiny_base, tiny_model_dir, tmp_path)
    location = tiny_base.weights_location
    BaseModel.objects.filter(pk=tiny_base.pk).update(weights_location=str(tmp_path / "gone"))
    export = exports.merged_export_request(model=card)
    failed = exports.merged_export_build(export_id=export.pk)
    assert failed.status == ExportStatus.FAILED and failed.error == (
        f"the base model {tiny_base.code} cannot be read here: The folder configured for its weights has no model "
        "in it."
    )
    page = alice_client.get(f"/console/models/{card.code}/").content.decode()
    assert 'data-testid="merged-error"' in page and "Try again" in page
    assert not list(Path(settings.MODELS_DIR).glob("exports/export-*"))  # no scratch left behind
    BaseModel.objects.filter(pk=tiny_base.pk).update(weights_location=location)
    response = alice_client.post(f"/console/deployments/exports/{card.code}/")
    assert response.status_code == 302 and response["Location"] == f"/console/models/{card.code}/"
    export.refresh_from_db()
    assert export.status == ExportStatus.QUEUED and export.error == ""
    assert exports.merged_export_build(export_id=export.pk).status == ExportStatus.READY


def test_deleting_the_model_deletes_its_merged_files(
    alice, tiny_base, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks, settings
):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    card = _lora_card(alice, tiny_base, tiny_model_dir, tmp_path)
    export = exports.merged_export_build(export_id=exports.merged_export_request(model=card).pk)
    assert storage.list_folder(export.folder)
    with django_capture_on_commit_callbacks(execute=True):
        fine_tuned_model_delete(model=card)
    assert storage.list_folder(export.folder) == []


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_in_chromium_a_worker_builds_it_and_the_card_offers_the_zip(
    celery_worker, page, live_server, alice, tiny_base, tiny_model_dir, tmp_path, screenshot_dir
):
    card = _lora_card(alice, tiny_base, tiny_model_dir, tmp_path)
    page.goto(f"{live_server.url}/console/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.wait_for_selector("text=Overview")
    page.goto(f"{live_server.url}/console/models/{card.code}/")
    page.click("[data-testid=merged-build]")
    expect(page.locator("[data-testid=merged-building]")).to_be_visible()
    # The section polls: the worker's build shows up without a reload.
    expect(page.locator("[data-testid=merged-download]")).to_be_visible(timeout=180000)
    page.screenshot(path=str(screenshot_dir / "merged-export.png"), full_page=True)
    with page.expect_download() as download:
        page.click("[data-testid=merged-download]")
    archive = zipfile.ZipFile(download.value.path())
    assert any(n.endswith("/model.safetensors") for n in archive.namelist())
    storage.delete_folder(MergedExport.objects.get(fine_tuned_model=card).folder)


def test_the_section_reads_in_chinese(alice_client, alice, tiny_base, tiny_model_dir, tmp_path):
    card = _lora_card(alice, tiny_base, tiny_model_dir, tmp_path)
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    page = alice_client.get(f"/console/models/{card.code}/").content.decode()
    assert "合并模型" in page and "构建合并模型" in page and "Build the merged model" not in page
