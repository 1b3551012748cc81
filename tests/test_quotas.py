"""Limits per user: unfinished fine-tuning tasks, datasets stored and deployments; defaults from settings, one user's
own set by an operator in the admin; each refusal says which limit and how to get more."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import ApiKey
from accounts.quotas import user_quota
from jobs.models import FineTuningJob

from .jobs_support import chat_lines, make_dataset

pytestmark = pytest.mark.django_db


def _api(client, user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiKey.create_for(user=user, name='q')[1]}"}


def _quota_error(response, words: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded", error
    assert words in error["message"], error
    assert "An operator can raise your limit in the admin." in error["message"]


def _upload(client, headers, name: str):
    data = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    return client.post(
        "/api/paas/v4/files", {"file": SimpleUploadedFile(f"{name}.jsonl", data), "purpose": "fine-tune"}, **headers
    )


def test_datasets_stored_are_limited_per_user(client, alice, bob, settings):
    settings.USER_MAX_DATASETS = 2
    headers = _api(client, alice)
    for name in ("a", "b"):
        assert _upload(client, headers, name).status_code == 200
    _quota_error(_upload(client, headers, "c"), "You already store 2 datasets, your limit")
    # bob has his own count; an operator raises alice's own limit.
    assert _upload(client, _api(client, bob), "a").status_code == 200
    alice.max_datasets = 3
    alice.save()
    assert _upload(client, headers, "c").status_code == 200


def test_a_limit_of_one_reads_singular_in_both_languages(client, alice, settings):
    settings.USER_MAX_DATASETS = 1
    headers = _api(client, alice)
    assert _upload(client, headers, "a").status_code == 200
    _quota_error(_upload(client, headers, "b"), "You already store 1 dataset, your limit: delete it if you no longer")
    response = _upload(client, {**headers, "HTTP_ACCEPT_LANGUAGE": "zh-hans"}, "b")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("你已存储 1 个数据集，达到上限")


def test_unfinished_tasks_are_limited_per_user(client, alice, tiny_base, settings):
    settings.USER_MAX_RUNNING_JOBS = 1
    dataset = make_dataset(alice, chat_lines())
    FineTuningJob.objects.create(
        owner=alice,
        base_model=tiny_base,
        training_dataset=dataset,
        status="running",
        fine_tuned_model="ft:tiny-test:a:000001",
    )
    body = {"model": tiny_base.code, "training_file": dataset.public_id}
    headers = _api(client, alice)
    response = client.post("/api/paas/v4/fine_tuning/jobs", body, content_type="application/json", **headers)
    _quota_error(response, "You already have 1 fine-tuning task that has not finished, your limit")
    # A finished task does not count.
    FineTuningJob.objects.filter(owner=alice).update(status="succeeded")
    response = client.post("/api/paas/v4/fine_tuning/jobs", body, content_type="application/json", **headers)
    assert response.status_code == 200, response.content


def test_deployments_are_limited_per_user_and_cancelled_ones_do_not_count(client, alice, tiny_base, settings):
    settings.USER_MAX_DEPLOYMENTS = 1
    headers = _api(client, alice)
    first = client.post(
        "/api/paas/v4/deployments", {"model": tiny_base.code}, content_type="application/json", **headers
    )
    assert first.status_code == 200, first.content
    response = client.post(
        "/api/paas/v4/deployments", {"model": tiny_base.code}, content_type="application/json", **headers
    )
    _quota_error(response, "You already have 1 deployment, your limit")
    client.post(f"/api/paas/v4/deployments/{first.json()['id']}/cancel", **headers)
    response = client.post(
        "/api/paas/v4/deployments", {"model": tiny_base.code}, content_type="application/json", **headers
    )
    assert response.status_code == 200, response.content


def test_the_console_pages_say_it_too(client, alice, tiny_base, settings):
    settings.USER_MAX_DEPLOYMENTS = 1
    client.force_login(alice)
    for _ in range(2):
        response = client.post("/console/deployments/new/", {"model": tiny_base.code, "instances": 1})
    assert response.status_code == 200
    assert "You already have 1 deployment, your limit" in response.content.decode()


def test_defaults_come_from_settings_and_zero_is_no_limit(alice, settings):
    settings.USER_MAX_DATASETS = 7
    assert user_quota(user=alice, name="datasets") == 7
    alice.max_datasets = 0
    assert user_quota(user=alice, name="datasets") == 0


def test_an_operator_sets_a_users_limits_in_the_admin(client, alice):
    from .conftest import make_user

    admin = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    page = client.get(f"/admin/console/user/{alice.pk}/change/").content.decode()
    for field in ("max_running_jobs", "max_datasets", "max_deployments"):
        assert f'name="{field}"' in page
