"""Dataset pages: upload, list, detail, live progress partial, report, delete; owners only."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from datasets.models import Category, Dataset, Status, ValidationIssue
from datasets.services import dataset_validate

from .datasets_support import sample

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Each test stores uploads in its own folder, so "nothing left behind" can be checked."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def upload(client, name: str, category: str = "", data: dict | None = None, **extra):
    with open(sample(name), "rb") as fh:
        return client.post(
            "/console/datasets/upload/", {"file": fh, "category": category, "name": "", **(data or {})}, **extra
        )


def media_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "datasets"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def uploaded(client, name: str, category: str = "") -> Dataset:
    response = upload(client, name, category)
    assert response.status_code == 302, response.content[:2000]
    dataset = Dataset.objects.latest("id")
    dataset_validate(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    return dataset


def test_upload_page_has_categories_drop_zone_and_script(alice_client):
    html = alice_client.get("/console/datasets/upload/").content.decode()
    assert 'id="dropzone"' in html and "datasets/upload.js" in html and "Auto-detect" in html
    for value in Category.values:
        assert f'value="{value}"' in html
    assert f'data-max-bytes="{settings.DATASET_MAX_BYTES}"' in html


def test_upload_stores_the_file_and_queues_validation(alice_client, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = upload(alice_client, "chat.jsonl")
    dataset = Dataset.objects.get(owner=alice)
    assert response.status_code == 302 and response["Location"] == f"/console/datasets/{dataset.public_id}/"
    assert len(callbacks) == 1  # validation is queued only once the row is committed
    assert dataset.status == Status.UPLOADED and dataset.category == "" and dataset.category_auto
    assert dataset.bytes == sample("chat.jsonl").stat().st_size and dataset.name == "chat"
    assert Path(dataset.file.path).read_bytes() == sample("chat.jsonl").read_bytes()
    assert dataset.file.name == f"datasets/{alice.pk}/{dataset.public_id}.jsonl"
    assert len(dataset.sha256) == 64


def test_xhr_upload_answers_json(alice_client):
    response = upload(alice_client, "dpo.jsonl", category="dpo", HTTP_ACCEPT="application/json")
    assert response.status_code == 201
    dataset = Dataset.objects.latest("id")
    assert response.json() == {"id": dataset.public_id, "url": f"/console/datasets/{dataset.public_id}/"}
    assert dataset.category == "dpo" and not dataset.category_auto


@pytest.mark.parametrize(
    "name",
    [
        "chat.jsonl",
        "function_call.jsonl",
        "reasoning.jsonl",
        "dpo.jsonl",
        "image_generation.jsonl",
        "image_understanding.jsonl",
        "legacy_input_target.jsonl",
    ],
)
def test_each_sample_uploads_and_validates_with_the_right_counts(alice_client, name):
    dataset = uploaded(alice_client, name)
    expected = {
        "chat.jsonl": 13,
        "function_call.jsonl": 6,
        "reasoning.jsonl": 6,
        "dpo.jsonl": 6,
        "image_generation.jsonl": 4,
        "image_understanding.jsonl": 4,
        "legacy_input_target.jsonl": 5,
    }[name]
    assert dataset.status == Status.READY and dataset.examples == expected and dataset.error_count == 0
    assert dataset.tokens and dataset.tokens > 0 and dataset.base_model.code == "smollm2-135m-instruct"
    assert dataset.bytes_read == dataset.bytes and dataset.report
    html = alice_client.get(f"/console/datasets/{dataset.public_id}/").content.decode()
    assert 'data-testid="ready-banner"' in html and f'data-testid="stat-examples">{expected}<' in html
    assert html.count('data-testid="example"') == min(expected, 10)
    assert "hx-trigger" not in html.split("<main", 1)[1]  # final: nothing in the page polls (the top bar may)


def test_preview_renders_tool_calls_reasoning_and_images(alice_client):
    fc = uploaded(alice_client, "function_call.jsonl")
    html = alice_client.get(f"/console/datasets/{fc.public_id}/").content.decode()
    assert "generate_anagram" in html and "Tool result" in html and "TX92Jm8Zi" in html
    assert "Tools: generate_anagram" in html
    rs = uploaded(alice_client, "reasoning.jsonl")
    html = alice_client.get(f"/console/datasets/{rs.public_id}/").content.decode()
    assert '<details class="reasoning"><summary>Reasoning</summary>' in html and "13 × 17" in html
    ig = uploaded(alice_client, "image_generation.jsonl")
    html = alice_client.get(f"/console/datasets/{ig.public_id}/").content.decode()
    assert html.count('class="thumb"') == 4
    assert 'src="data:image/jpeg;base64,/9j/' in html and 'src="data:image/png;base64,iVBOR' in html
    assert 'src="https://www.zhipuai.cn/assets/images/aboutus/company.jpeg"' in html
    dpo = uploaded(alice_client, "dpo.jsonl")
    html = alice_client.get(f"/console/datasets/{dpo.public_id}/").content.decode()
    assert "Preferred" in html and "Not preferred" in html


def test_broken_file_shows_line_errors_warnings_apart_and_full_report(alice_client):
    dataset = uploaded(alice_client, "broken_chat.jsonl", category="chat")
    assert dataset.status == Status.INVALID and dataset.error_count == 8 and dataset.examples == 3
    html = alice_client.get(f"/console/datasets/{dataset.public_id}/").content.decode()
    assert 'data-testid="invalid-banner"' in html and "8 errors" in html
    errors_section = html.split('data-testid="errors"')[1].split('data-testid="warnings"')[0]
    for line_no in (3, 4, 5, 7, 8, 9, 11, 12):
        assert f'data-line="{line_no}"' in errors_section
    assert "<code>messages[0].role</code>" in errors_section and "Unknown role &quot;bot&quot;" in errors_section
    warnings_section = html.split('data-testid="warnings"')[1]
    assert "This line repeats line 1 exactly." in warnings_section
    response = alice_client.get(f"/console/datasets/{dataset.public_id}/issues.csv")
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["line", "severity", "path", "code", "message"]
    assert [r[0] for r in rows[1:] if r[1] == "error"] == ["3", "4", "5", "7", "8", "9", "11", "12"]


def test_more_than_a_thousand_errors_keeps_a_thousand_and_reports_all(alice_client, alice):
    body = b'{"messages": 1}\n' * 1200
    alice_client.post("/console/datasets/upload/", {"file": SimpleUploadedFile("many.jsonl", body)})
    dataset = Dataset.objects.get(owner=alice)
    dataset_validate(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    assert dataset.error_count == 1200 and ValidationIssue.objects.filter(dataset=dataset).count() == 1000
    html = alice_client.get(f"/console/datasets/{dataset.public_id}/?errors=20").content.decode()
    assert "The first 1,000 of 1,200 errors are listed here" in html and "Page 20 of 20" in html
    report = b"".join(alice_client.get(f"/console/datasets/{dataset.public_id}/issues.csv").streaming_content)
    assert report.count(b"\n") == 1201


def test_live_partial_polls_while_validating_and_stops_when_done(alice_client, alice):
    upload(alice_client, "chat.jsonl")
    dataset = Dataset.objects.get(owner=alice)
    Dataset.objects.filter(pk=dataset.pk).update(status=Status.VALIDATING, bytes_read=dataset.bytes // 2)
    page = alice_client.get(f"/console/datasets/{dataset.public_id}/").content.decode()
    assert f'hx-get="/console/datasets/{dataset.public_id}/live/"' in page and 'hx-trigger="every 1s"' in page
    live = alice_client.get(f"/console/datasets/{dataset.public_id}/live/", HTTP_HX_REQUEST="true")
    html = live.content.decode()
    assert live.status_code == 200 and "<html" not in html
    assert 'hx-trigger="every 1s"' in html and "read (" in html
    Dataset.objects.filter(pk=dataset.pk).update(status=Status.UPLOADED, bytes_read=0)
    dataset_validate(dataset_id=dataset.pk)
    done = alice_client.get(f"/console/datasets/{dataset.public_id}/live/", HTTP_HX_REQUEST="true")
    assert done.status_code == 286  # htmx stops polling
    assert "hx-trigger" not in done.content.decode() and 'data-testid="stats"' in done.content.decode()


def test_progress_percent_comes_from_bytes_read(alice_client, alice):
    upload(alice_client, "chat.jsonl")
    dataset = Dataset.objects.get(owner=alice)
    Dataset.objects.filter(pk=dataset.pk).update(status=Status.VALIDATING, bytes_read=dataset.bytes // 4)
    html = alice_client.get(f"/console/datasets/{dataset.public_id}/live/", HTTP_HX_REQUEST="true").content.decode()
    expected = dataset.bytes // 4 * 100 // dataset.bytes
    assert f'aria-valuenow="{expected}"' in html and f"width: {expected}%" in html


def test_empty_file_is_a_clear_error_and_saves_nothing(alice_client, alice):
    response = alice_client.post("/console/datasets/upload/", {"file": SimpleUploadedFile("empty.jsonl", b"")})
    assert response.status_code == 400 and "The submitted file is empty." in response.content.decode()
    assert not Dataset.objects.exists() and media_files() == []


def test_too_large_upload_is_stopped_while_streaming_and_leaves_nothing(alice_client, settings, tmp_path):
    settings.DATASET_MAX_BYTES = 200 * 1024  # the file fits the Content-Length slack but not the limit
    (tmp_path / "uploads").mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    body = (b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}\n') * 3000
    assert settings.DATASET_MAX_BYTES < len(body) < settings.DATASET_MAX_BYTES + 64 * 1024
    response = alice_client.post(
        "/console/datasets/upload/", {"file": SimpleUploadedFile("big.jsonl", body)}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 413 and "larger than the limit of 200.0 KiB" in response.json()["errors"]["file"][0]
    assert not Dataset.objects.exists() and media_files() == [] and list((tmp_path / "uploads").iterdir()) == []


def test_too_large_declared_length_is_refused_before_reading(alice_client, settings):
    settings.DATASET_MAX_BYTES = 1024
    body = b"x" * (300 * 1024)
    response = alice_client.post("/console/datasets/upload/", {"file": SimpleUploadedFile("big.jsonl", body)})
    assert response.status_code == 413 and "larger than the limit" in response.content.decode()
    assert not Dataset.objects.exists() and media_files() == []


def test_list_search_pagination_and_empty_state(alice_client, alice):
    html = alice_client.get("/console/datasets/").content.decode()
    assert 'data-testid="empty-state"' in html and "Upload your first dataset" in html
    Dataset.objects.bulk_create(
        Dataset(
            owner=alice,
            name=f"set {i:02d}" + (" support" if i % 5 == 0 else ""),
            filename="x.jsonl",
            file=f"datasets/{alice.pk}/x{i}.jsonl",
            bytes=1000 + i,
            status=Status.READY,
            category="chat",
            examples=i,
            tokens=i * 10,
        )
        for i in range(45)
    )
    html = alice_client.get("/console/datasets/").content.decode()
    assert html.count('href="/console/datasets/') - html.count('href="/console/datasets/upload/') >= 20
    assert "Page 1 of 3 (45 in all)" in html
    assert "Page 3 of 3" in alice_client.get("/console/datasets/?page=3").content.decode()
    found = alice_client.get("/console/datasets/?q=support").content.decode()
    assert "Page" not in found and found.count(" support</a>") == 9
    none = alice_client.get("/console/datasets/?q=nothing-like-this").content.decode()
    assert "No dataset's name contains" in none


def test_list_at_ten_thousand_rows_uses_a_fixed_number_of_queries(alice_client, alice):
    Dataset.objects.bulk_create(
        [
            Dataset(
                owner=alice,
                name=f"d{i}",
                filename="x.jsonl",
                file=f"datasets/{alice.pk}/{i}.jsonl",
                bytes=i,
                status=Status.READY,
                category="chat",
                examples=i,
            )
            for i in range(10_000)
        ],
        batch_size=2000,
    )
    with CaptureQueriesContext(connection) as ctx:
        response = alice_client.get("/console/datasets/?page=250")
    assert response.status_code == 200 and "Page 250 of 500 (10000 in all)" in response.content.decode()
    assert len(ctx.captured_queries) <= 6, [q["sql"] for q in ctx.captured_queries]


def test_list_polls_only_while_something_validates(alice_client, alice):
    upload(alice_client, "chat.jsonl")
    html = alice_client.get("/console/datasets/").content.decode()
    assert 'hx-trigger="every 2s"' in html and "Queued" in html
    partial = alice_client.get("/console/datasets/?partial=table", HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and "<html" not in partial.content.decode()
    dataset_validate(dataset_id=Dataset.objects.get().pk)
    partial = alice_client.get("/console/datasets/?partial=table", HTTP_HX_REQUEST="true")
    assert partial.status_code == 286 and "every 2s" not in partial.content.decode()


def test_delete_asks_first_then_removes_row_and_files(alice_client, alice):
    dataset = uploaded(alice_client, "broken_chat.jsonl")
    paths = [Path(dataset.file.path), Path(dataset.report.path)]
    assert all(p.exists() for p in paths)
    page = alice_client.get(f"/console/datasets/{dataset.public_id}/delete/").content.decode()
    assert "This cannot be undone" in page and Dataset.objects.filter(pk=dataset.pk).exists()
    response = alice_client.post(f"/console/datasets/{dataset.public_id}/delete/")
    assert response.status_code == 302 and response["Location"] == "/console/datasets/"
    assert not Dataset.objects.filter(pk=dataset.pk).exists() and not any(p.exists() for p in paths)


def test_a_dataset_used_by_a_fine_tuning_task_is_kept(alice_client, alice):
    from jobs.models import BaseModel, FineTuningJob

    dataset = uploaded(alice_client, "chat.jsonl")
    job = _make_job(alice, dataset, BaseModel.objects.get(is_default=True), FineTuningJob)
    page = alice_client.get(f"/console/datasets/{dataset.public_id}/delete/").content.decode()
    assert "cannot be deleted" in page and str(job) in page and "confirm-delete" not in page
    response = alice_client.post(f"/console/datasets/{dataset.public_id}/delete/", follow=True)
    assert Dataset.objects.filter(pk=dataset.pk).exists() and Path(dataset.file.path).exists()
    assert f"This dataset is used by fine-tuning task {job.public_id} and is kept for its record." in (
        response.content.decode()
    )


def _make_job(owner, dataset, base_model, model):
    """A minimal fine-tuning task row that trains on ``dataset`` (the jobs app owns the real flow)."""
    fields = {f.name for f in model._meta.get_fields()}
    kwargs = {"owner": owner, "training_dataset": dataset, "base_model": base_model}
    if "suffix" in fields:
        kwargs["suffix"] = "kept"
    return model.objects.create(**{k: v for k, v in kwargs.items() if k in fields})


# --- owners only -----------------------------------------------------------------


def test_another_users_dataset_is_404_everywhere(alice_client, client, bob):
    dataset = uploaded(alice_client, "broken_chat.jsonl")
    client.force_login(bob)
    for url in (
        f"/console/datasets/{dataset.public_id}/",
        f"/console/datasets/{dataset.public_id}/live/",
        f"/console/datasets/{dataset.public_id}/issues.csv",
        f"/console/datasets/{dataset.public_id}/download/",
        f"/console/datasets/{dataset.public_id}/delete/",
    ):
        assert client.get(url).status_code == 404, url
        assert client.get(url, HTTP_HX_REQUEST="true").status_code == 404, url
    assert client.post(f"/console/datasets/{dataset.public_id}/delete/").status_code == 404
    assert Dataset.objects.filter(pk=dataset.pk).exists()
    listing = client.get("/console/datasets/").content.decode()
    assert dataset.name not in listing and 'data-testid="empty-state"' in listing
    assert dataset.public_id not in client.get("/console/datasets/?q=broken").content.decode()


def test_pages_need_login(client):
    for url in ("/console/datasets/", "/console/datasets/upload/"):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_download_returns_the_exact_file(alice_client):
    dataset = uploaded(alice_client, "dpo.jsonl")
    response = alice_client.get(f"/console/datasets/{dataset.public_id}/download/")
    assert b"".join(response.streaming_content) == sample("dpo.jsonl").read_bytes()


def test_validation_crash_marks_the_dataset_invalid_with_the_reason(alice_client, alice, monkeypatch):
    from datasets import services

    upload(alice_client, "chat.jsonl")
    dataset = Dataset.objects.get(owner=alice)

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services.Validator, "run", boom)
    dataset_validate(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    assert dataset.status == Status.INVALID and "internal error (RuntimeError)" in dataset.status_message
    assert not ValidationIssue.objects.filter(dataset=dataset).exists()
    report_dir = Path(dataset.file.path).parent
    assert sorted(p.name for p in report_dir.iterdir()) == [Path(dataset.file.path).name]  # no half-written report
    html = alice_client.get(f"/console/datasets/{dataset.public_id}/").content.decode()
    assert "internal error" in html


def test_validation_runs_once(alice_client, alice):
    upload(alice_client, "chat.jsonl")
    dataset = Dataset.objects.get(owner=alice)
    assert dataset_validate(dataset_id=dataset.pk) is not None
    assert dataset_validate(dataset_id=dataset.pk) is None  # already done: a redelivered task is a no-op
    assert dataset_validate(dataset_id=999999) is None


def test_ready_for_and_iter_examples(alice_client, alice, bob):
    from datasets.services import dataset_iter_examples

    chat = uploaded(alice_client, "legacy_input_target.jsonl")
    dpo = uploaded(alice_client, "dpo.jsonl")
    uploaded(alice_client, "broken_chat.jsonl", category="chat")
    assert list(Dataset.objects.ready_for(alice, "chat")) == [chat]
    assert set(Dataset.objects.ready_for(alice, ["chat", "dpo"])) == {chat, dpo}
    assert not Dataset.objects.ready_for(bob, "chat").exists()
    examples = list(dataset_iter_examples(dataset=chat))
    assert len(examples) == 5
    assert examples[0]["messages"][0] == {"role": "user", "content": "请介绍一下AlphaGo的基本原理。"}
    assert examples[0]["messages"][1]["role"] == "assistant"
    pairs = list(dataset_iter_examples(dataset=dpo))
    assert len(pairs) == 6 and set(pairs[0]) == {"messages", "preferred_output", "non_preferred_output"}


def test_admin_lists_revalidates_and_deletes_with_files(client, alice_client, django_capture_on_commit_callbacks):
    from django.contrib.auth import get_user_model

    dataset = uploaded(alice_client, "broken_chat.jsonl")
    admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(admin_user)
    assert "broken_chat" in client.get("/admin/datasets/dataset/").content.decode()
    page = client.get(f"/admin/datasets/dataset/{dataset.pk}/change/").content.decode()
    assert "Unknown role" in page
    with django_capture_on_commit_callbacks() as callbacks:
        client.post("/admin/datasets/dataset/", {"action": "revalidate", "_selected_action": [dataset.pk]})
    dataset.refresh_from_db()
    assert dataset.status == Status.UPLOADED and len(callbacks) == 1
    path = Path(dataset.file.path)
    client.post(f"/admin/datasets/dataset/{dataset.pk}/delete/", {"post": "yes"})
    assert not Dataset.objects.filter(pk=dataset.pk).exists() and not path.exists()


def _admin_edit(client, dataset: Dataset, **changes):
    form = {
        "name": dataset.name,
        "category": dataset.category,
        "base_model": dataset.base_model_id or "",
        "issues-TOTAL_FORMS": "0",
        "issues-INITIAL_FORMS": "0",
        **changes,
    }
    return client.post(f"/admin/datasets/dataset/{dataset.pk}/change/", form)


def test_admin_validates_a_ready_dataset_again_when_its_category_or_base_model_changes(
    client, alice_client, django_capture_on_commit_callbacks
):
    """Validation read the category and the base model: changed in the admin, the counts and issues would
    describe another one, and a task could start on it. The change sends it back through validation."""
    from django.contrib.auth import get_user_model

    from modelcards.models import BaseModel

    dataset = uploaded(alice_client, "legacy_input_target.jsonl")
    assert dataset.status == Status.READY and dataset.category == Category.CHAT
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "root-pass-123"))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:  # a new name alone: nothing to validate
        assert _admin_edit(client, dataset, name="renamed").status_code == 302
    dataset.refresh_from_db()
    assert dataset.name == "renamed" and dataset.status == Status.READY and not callbacks

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert _admin_edit(client, dataset, category=Category.DPO).status_code == 302
    dataset.refresh_from_db()
    assert dataset.category == Category.DPO and dataset.status == Status.UPLOADED and len(callbacks) == 1
    dataset_validate(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    assert dataset.status == Status.INVALID and dataset.error_count  # chat lines are no preference pairs

    other = BaseModel.objects.exclude(pk=dataset.base_model_id).order_by("pk").first()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert _admin_edit(client, dataset, base_model=other.pk).status_code == 302
    dataset.refresh_from_db()
    assert dataset.base_model_id == other.pk and dataset.status == Status.UPLOADED and len(callbacks) == 1

    # While a worker validates it, the two are read-only: a POST changes neither.
    Dataset.objects.filter(pk=dataset.pk).update(status=Status.VALIDATING)
    page = client.get(f"/admin/datasets/dataset/{dataset.pk}/change/").content.decode()
    assert 'name="category"' not in page and 'name="base_model"' not in page and 'name="name"' in page
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        _admin_edit(client, dataset, category=Category.CHAT, base_model="")
    dataset.refresh_from_db()
    assert dataset.category == Category.DPO and dataset.base_model_id == other.pk and not callbacks
    assert dataset.status == Status.VALIDATING


def test_pages_and_validation_messages_in_chinese(alice_client, alice):
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    html = alice_client.get("/console/datasets/").content.decode()
    assert "还没有数据集。" in html and "上传数据" in html
    dataset = uploaded(alice_client, "broken_chat.jsonl", category="chat")
    html = alice_client.get(f"/console/datasets/{dataset.public_id}/").content.decode()
    assert "未知角色 &quot;bot&quot;" in html and "该行与第 1 行完全相同。" in html and "下载完整报告" in html


def test_repair_requeues_lost_and_stalled_validations(alice_client, alice, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from datasets import services

    sent = []
    monkeypatch.setattr(services, "dataset_enqueue_validation", lambda *, dataset_id: sent.append(dataset_id))
    for name in ("chat.jsonl", "dpo.jsonl", "reasoning.jsonl"):
        upload(alice_client, name)
    lost, stalled, fresh = Dataset.objects.order_by("id")
    assert sent == [lost.pk, stalled.pk, fresh.pk]  # each upload asked for its validation
    sent.clear()
    old = timezone.now() - timedelta(minutes=5)
    Dataset.objects.filter(pk=lost.pk).update(updated_at=old)
    Dataset.objects.filter(pk=stalled.pk).update(status=Status.VALIDATING, heartbeat_at=old, updated_at=old)
    assert services.dataset_repair() == 2 and sorted(sent) == [lost.pk, stalled.pk]
    # The stalled one is claimed again (its worker is gone); a live one would not be.
    assert dataset_validate(dataset_id=stalled.pk).status == Status.READY
    Dataset.objects.filter(pk=fresh.pk).update(status=Status.VALIDATING, heartbeat_at=timezone.now())
    assert dataset_validate(dataset_id=fresh.pk) is None


def test_upload_counts_tokens_for_a_chosen_base_model_with_weights(alice_client, alice, tiny_base):
    from modelcards.models import BaseModel

    html = alice_client.get("/console/datasets/upload/").content.decode()
    default = BaseModel.objects.get(is_default=True)
    assert f'<option value="{default.pk}" selected>' in html and f'<option value="{tiny_base.pk}">' in html
    missing = BaseModel.objects.get(code="glm-4-flash")
    assert f'<option value="{missing.pk}"' not in html  # no tokenizer on this server: it cannot count
    response = upload(alice_client, "chat.jsonl", data={"base_model": tiny_base.pk})
    assert response.status_code == 302
    assert Dataset.objects.get(owner=alice).base_model == tiny_base
    refused = upload(alice_client, "dpo.jsonl", data={"base_model": missing.pk})
    assert refused.status_code == 400 and "Select a valid choice" in refused.content.decode()
    assert Dataset.objects.filter(owner=alice).count() == 1
