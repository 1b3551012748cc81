"""The create form shows every error at once, at its field, in the form's words; the picker tells datasets apart."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from accounts.models import ApiKey
from datasets.models import Dataset
from jobs.models import FineTuningJob

from .jobs_support import chat_lines, dpo_lines, make_dataset

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


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


def _field_errors(html: str) -> dict[str, list[str]]:
    """Each field's errors as rendered inside its own block, by the input's id."""
    errors = {}
    for block in re.findall(r'<div class="field has-error">(.*?)</div>', html, re.S):
        label = re.search(r'<label for="id_(\w+)"', block)
        assert label, block
        name = label.group(1)
        errors[name] = re.findall(r'<small class="error" role="alert">(.*?)</small>', block, re.S)
    return errors


def test_every_field_error_at_once_at_its_field_in_the_forms_words(alice_client, alice, tiny_base):
    chat = make_dataset(alice, chat_lines())
    response = alice_client.post(
        "/console/jobs/create/",
        _form(chat, method="dpo", n_epochs="0", batch_size="lots", learning_rate_multiplier="99", suffix="Bad Suffix!"),
    )
    html = response.content.decode()
    assert response.status_code == 200 and not FineTuningJob.objects.exists()
    errors = _field_errors(html)
    assert errors["n_epochs"] == ["Enter a whole number from 1 to 50, or auto."]
    assert errors["batch_size"] == ["Enter a whole number from 1 to 256, or auto."]
    assert errors["learning_rate_multiplier"] == ["Enter a number from 0.01 to 10.0, or auto."]
    assert errors["suffix"] == ["Use at most 40 characters of a-z, 0-9, - and _ (no capitals or spaces)."]
    assert len(errors["training_dataset"]) == 1 and "DPO on tiny-test needs a dataset" in errors["training_dataset"][0]
    for api_name in ("n_epochs must", "batch_size must", "learning_rate_multiplier must"):
        assert api_name not in html
    assert 'value="0"' in html and 'value="lots"' in html and 'value="Bad Suffix!"' in html  # kept


def test_estimate_names_a_bad_hyperparameter_by_its_label(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    html = alice_client.post("/console/jobs/estimate/", _form(dataset, n_epochs="51"), **HTMX).content.decode()
    assert "Epochs: Enter a whole number from 1 to 50, or auto." in html
    assert "n_epochs" not in html and 'data-testid="cost"' not in html


def test_valid_form_still_creates_the_task(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    response = alice_client.post(
        "/console/jobs/create/",
        _form(dataset, n_epochs="AUTO", batch_size="2", learning_rate_multiplier="0.5", suffix="ok"),
    )
    assert response.status_code == 302
    job = FineTuningJob.objects.get()
    assert job.resolved_hyperparameters["batch_size"] == 2 and job.resolved_hyperparameters["n_epochs"] == 5


def test_picker_tells_apart_datasets_of_the_same_name_by_date_and_size(alice_client, alice, tiny_base):
    old = make_dataset(alice, chat_lines(10), name="support")
    new = make_dataset(alice, chat_lines(30), name="support")
    Dataset.objects.filter(pk=old.pk).update(created_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    Dataset.objects.filter(pk=new.pk).update(created_at=datetime(2025, 3, 4, 12, 0, tzinfo=UTC))
    html = alice_client.get("/console/jobs/create/").content.decode()
    options = re.findall(r'<option value="(\d+)"[^>]*>(support[^<]*)</option>', html)
    labels = dict(options)
    assert "2025-03-01" in labels[str(old.pk)] and "2025-03-04" in labels[str(new.pk)]
    from datasets.services import human_bytes

    assert human_bytes(old.bytes) in labels[str(old.pk)] and human_bytes(new.bytes) in labels[str(new.pk)]
    assert labels[str(old.pk)] != labels[str(new.pk)]


WRONG_CATEGORY = (
    "train is in the category “Text generation: chat”; DPO on tiny-test needs a dataset in the category "
    "“Text generation: preference alignment (DPO)”."
)


def test_a_dataset_of_the_wrong_category_is_named_as_the_dataset_pages_name_it(client, alice, tiny_base):
    """The categories and the method by their display names, in the form, the estimate and the API alike."""
    chat = make_dataset(alice, chat_lines())
    client.force_login(alice)
    html = client.post("/console/jobs/create/", _form(chat, method="dpo")).content.decode()
    assert _field_errors(html)["training_dataset"] == [WRONG_CATEGORY]
    assert "needs one of" not in html and not FineTuningJob.objects.exists()
    # The dataset's own page names its category the same way.
    assert "Text generation: chat" in client.get(f"/console/datasets/{chat.public_id}/").content.decode()
    # The API: the same sentence, with the machine-readable code beside it.
    headers = {"HTTP_AUTHORIZATION": f"Bearer {ApiKey.create_for(user=alice, name='t')[1]}"}
    body = {"model": "tiny-test", "training_file": chat.public_id, "method": "dpo"}
    response = client.post("/api/paas/v4/fine_tuning/jobs", body, content_type="application/json", **headers)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_file_category",
        "message": WRONG_CATEGORY,
        "param": "training_file",
    }
    # SFT on a text model takes three categories: all named, in the upload form's order.
    pairs = make_dataset(alice, dpo_lines(), category="dpo", name="pairs")
    body = {"model": "tiny-test", "training_file": pairs.public_id}
    message = client.post("/api/paas/v4/fine_tuning/jobs", body, content_type="application/json", **headers).json()
    assert message["error"]["message"] == (
        "pairs is in the category “Text generation: preference alignment (DPO)”; SFT on tiny-test needs a dataset "
        "in one of the categories “Text generation: chat”, “Text generation: function call”, "
        "“Text generation: deep thinking”."
    )


def test_the_wrong_category_in_chinese(client, alice, tiny_base):
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    client.force_login(alice)
    html = client.post("/console/jobs/create/", _form(make_dataset(alice, chat_lines()), method="dpo")).content.decode()
    assert _field_errors(html)["training_dataset"] == [
        "train 属于分类“文本生成：对话”；在 tiny-test 上进行 DPO 需要以下分类的数据集：“文本生成：偏好对齐（DPO）”。"
    ]
