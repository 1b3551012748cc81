"""The files API through the real zhipuai SDK: create, list, delete, content; idempotent; owners only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from zhipuai import APIRequestFailedError, APIStatusError, ZhipuAI

from accounts.models import ApiKey
from datasets.models import Dataset

from .datasets_support import sample, validate_all

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def media_root(alice_media):
    """alice's upload folder under the real media root (see ``alice_media``)."""
    return alice_media


def create(sdk, name: str, **kwargs):
    with open(sample(name), "rb") as fh:
        return sdk.files.create(file=fh, purpose="fine-tune", **kwargs)


def test_create_returns_the_file_object(sdk, alice):
    created = create(sdk, "chat.jsonl")
    dataset = Dataset.objects.get(owner=alice)
    assert created.id == dataset.public_id and created.id.startswith("file-")
    assert created.object == "file" and created.filename == "chat.jsonl" and created.purpose == "fine-tune"
    assert created.bytes == sample("chat.jsonl").stat().st_size
    assert created.status == "uploaded" and created.status_details is None
    assert abs(created.created_at - int(dataset.created_at.timestamp())) <= 1
    assert Path(dataset.file.path).read_bytes() == sample("chat.jsonl").read_bytes()


def test_status_follows_validation(sdk, alice, alice_key, live_server):
    good = create(sdk, "chat.jsonl")
    bad = create(sdk, "broken_chat.jsonl", extra_body={"category": "chat"})
    validate_all(alice)
    listed = {f.id: f for f in sdk.files.list(purpose="fine-tune").data}
    assert listed[good.id].status == "processed"
    assert listed[good.id].status_details.startswith("13 examples, ")
    assert "tokens (chat)" in listed[good.id].status_details and "1 warning" in listed[good.id].status_details
    assert listed[bad.id].status == "error"
    details = listed[bad.id].status_details
    assert details.startswith("8 errors; first: line 3: The JSON ends") and "truncated" in details
    raw = httpx.get(f"{live_server.url}/api/paas/v4/files", headers={"Authorization": f"Bearer {alice_key}"}).json()
    record = next(item for item in raw["data"] if item["id"] == good.id)
    assert record["examples"] == 13 and record["tokens"] == Dataset.objects.get(public_id=good.id).tokens


def test_category_extension_and_auto_detection(sdk, alice):
    dpo = create(sdk, "dpo.jsonl", extra_body={"category": "dpo"})
    auto = create(sdk, "function_call.jsonl")
    assert Dataset.objects.get(public_id=dpo.id).category == "dpo"
    dataset = Dataset.objects.get(public_id=auto.id)
    assert dataset.category_auto
    validate_all(alice)
    dataset.refresh_from_db()
    assert dataset.category == "function_call" and dataset.status == "ready"
    with pytest.raises(APIRequestFailedError) as exc:
        create(sdk, "chat.jsonl", extra_body={"category": "poetry"})
    assert "category must be one of" in exc.value.response.json()["error"]["message"]


def test_list_pages_with_after_limit_and_order(sdk, alice):
    ids = [create(sdk, name).id for name in ("chat.jsonl", "dpo.jsonl", "reasoning.jsonl", "legacy_input_target.jsonl")]
    first = sdk.files.list(limit=3)
    assert [f.id for f in first.data] == ids[::-1][:3] and first.has_more is True and first.object == "list"
    rest = sdk.files.list(limit=3, after=first.data[-1].id)
    assert [f.id for f in rest.data] == [ids[0]] and rest.has_more is False
    ascending = sdk.files.list(order="asc", limit=10)
    assert [f.id for f in ascending.data] == ids and ascending.has_more is False
    assert [f.id for f in sdk.files.list(order="asc", after=ids[1]).data] == ids[2:]
    assert sdk.files.list(purpose="batch").data == []
    with pytest.raises(APIRequestFailedError):
        sdk.files.list(limit=0)


def test_content_returns_the_bytes(sdk):
    created = create(sdk, "image_generation.jsonl")
    assert sdk.files.content(created.id).content == sample("image_generation.jsonl").read_bytes()


def test_delete_removes_the_file(sdk, alice):
    created = create(sdk, "chat.jsonl")
    path = Path(Dataset.objects.get(public_id=created.id).file.path)
    deleted = sdk.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True and deleted.object == "file"
    assert not Dataset.objects.exists() and not path.exists()
    with pytest.raises(APIStatusError) as exc:
        sdk.files.content(created.id)
    assert exc.value.response.status_code == 404
    with pytest.raises(APIStatusError) as exc:
        sdk.files.delete(created.id)
    assert exc.value.response.status_code == 404


def test_same_request_id_returns_the_same_file(sdk, alice):
    one = create(sdk, "chat.jsonl", extra_body={"request_id": "upload-42"})
    two = create(sdk, "chat.jsonl", extra_body={"request_id": "upload-42"})
    header = create(sdk, "dpo.jsonl", extra_headers={"Idempotency-Key": "upload-43"})
    again = create(sdk, "dpo.jsonl", extra_headers={"Idempotency-Key": "upload-43"})
    assert one.id == two.id and header.id == again.id
    assert Dataset.objects.filter(owner=alice).count() == 2


def test_a_retry_without_request_id_is_the_same_file_within_the_window(sdk, alice, settings):
    one = create(sdk, "chat.jsonl")
    two = create(sdk, "chat.jsonl")
    other = create(sdk, "dpo.jsonl")
    assert one.id == two.id != other.id and Dataset.objects.filter(owner=alice).count() == 2
    settings.DATASET_DEDUPE_WINDOW = 0
    three = create(sdk, "chat.jsonl")
    assert three.id != one.id


def test_errors_are_clear_and_save_nothing(sdk, alice, settings, tmp_path, media_root):
    settings.MEDIA_ROOT = str(tmp_path / "media")  # nothing here runs validation: no worker involved
    media_root = tmp_path / "media"
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(APIRequestFailedError) as exc:
        sdk.files.create(file=open(empty, "rb"), purpose="fine-tune")  # noqa: SIM115
    assert "empty" in exc.value.response.json()["error"]["message"]
    with pytest.raises(APIRequestFailedError) as exc, open(sample("chat.jsonl"), "rb") as fh:
        sdk.files.create(file=fh, purpose="retrieval")
    assert "purpose must be 'fine-tune'" in exc.value.response.json()["error"]["message"]
    settings.DATASET_MAX_BYTES = 1000
    with pytest.raises(APIStatusError) as exc:
        create(sdk, "chat.jsonl")
    assert exc.value.response.status_code == 413
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert "larger than the limit" in exc.value.response.json()["error"]["message"]
    assert not Dataset.objects.exists()
    assert not media_root.exists() or not any(p.is_file() for p in media_root.rglob("*"))


def test_another_users_files_do_not_exist_for_them(sdk, alice, bob, live_server):
    created = create(sdk, "chat.jsonl")
    _key, text = ApiKey.create_for(user=bob, name="bob")
    bob_sdk = ZhipuAI(api_key=text, base_url=f"{live_server.url}/api/paas/v4", max_retries=0)
    assert bob_sdk.files.list().data == []
    for call in (lambda: bob_sdk.files.content(created.id), lambda: bob_sdk.files.delete(created.id)):
        with pytest.raises(APIStatusError) as exc:
            call()
        assert exc.value.response.status_code == 404
    with pytest.raises(APIRequestFailedError):
        bob_sdk.files.list(after=created.id)
    assert Dataset.objects.filter(public_id=created.id).exists()
    # bob's own upload of the same content is his own file, not alice's
    with open(sample("chat.jsonl"), "rb") as fh:
        mine = bob_sdk.files.create(file=fh, purpose="fine-tune")
    assert mine.id != created.id and Dataset.objects.get(public_id=mine.id).owner == bob


def test_jwt_auth_works_for_uploads(alice_key, live_server, alice):
    jwt_sdk = ZhipuAI(
        api_key=alice_key, base_url=f"{live_server.url}/api/paas/v4", max_retries=0, disable_token_cache=False
    )
    with open(sample("reasoning.jsonl"), "rb") as fh:
        created = jwt_sdk.files.create(file=fh, purpose="fine-tune")
    assert Dataset.objects.get(public_id=created.id).owner == alice


def test_a_file_shows_every_recorded_problem_through_the_sdk(sdk, alice):
    bad = create(sdk, "broken_chat.jsonl", extra_body={"category": "chat"})
    validate_all(alice)
    found = sdk.get(f"/files/{bad.id}", cast_type=object)
    problems = found["problems"]
    assert found["status"] == "error" and len([p for p in problems if p["severity"] == "error"]) == 8
    assert (
        problems[0]
        == {
            "severity": "error",
            "line": 3,
            "path": problems[0]["path"],
            "code": "json",
            "message": problems[0]["message"],
        }
        and "truncated" in problems[0]["message"]
    )
    assert [p["line"] for p in problems if p["severity"] == "error"] == sorted(
        p["line"] for p in problems if p["severity"] == "error"
    )
    assert found["problems_truncated"] is False
    # the list stays light
    assert "problems" not in next(f for f in sdk.get("/files", cast_type=object)["data"] if f["id"] == bad.id)
    # more problems than are kept: flagged
    Dataset.objects.filter(public_id=bad.id).update(error_count=5000)
    assert sdk.get(f"/files/{bad.id}", cast_type=object)["problems_truncated"] is True
