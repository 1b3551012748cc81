"""The API under /api/paas/v4 with the real zhipuai and openai SDKs against a live server."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from django.utils import timezone

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)


def _models(client) -> dict:
    return client.get("/models", cast_type=object)


def test_zhipuai_sdk_lists_models_with_a_bearer_key(sdk):
    body = _models(sdk)
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert "smollm2-135m-instruct" in ids
    assert "glm-4-flash" in ids
    # Annual private-plan models are not offered to ordinary users.
    assert "glm-4-0520" not in ids
    assert all(m["object"] == "model" for m in body["data"])


def test_zhipuai_sdk_jwt_mode_is_accepted(live_server, alice_key):
    from zhipuai import ZhipuAI

    client = ZhipuAI(
        api_key=alice_key, base_url=f"{live_server.url}/api/paas/v4", disable_token_cache=False, max_retries=0
    )
    assert client.auth_headers["Authorization"].count(".") == 2  # it really sends a JWT
    assert "smollm2-135m-instruct" in [m["id"] for m in _models(client)["data"]]


def test_openai_sdk_lists_models(live_server, alice_key):
    from openai import OpenAI

    client = OpenAI(api_key=alice_key, base_url=f"{live_server.url}/api/paas/v4", max_retries=0)
    assert "smollm2-135m-instruct" in [m.id for m in client.models.list()]


def test_using_a_key_records_last_used(sdk, alice):
    key = ApiKey.objects.get(user=alice)
    assert key.last_used_at is None
    _models(sdk)
    key.refresh_from_db()
    assert key.last_used_at is not None


def _get(live_server, headers: dict) -> httpx.Response:
    return httpx.get(f"{live_server.url}/api/paas/v4/models", headers=headers)


def _assert_401(response: httpx.Response, code: str) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-should-retry"] == "false"
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "1001"),
        ({"Authorization": "Basic abc"}, "1001"),
        ({"Authorization": "Bearer nodothere"}, "1002"),
        ({"Authorization": "Bearer abc.def"}, "1002"),
        ({"Authorization": "Bearer not.a.jwt"}, "1002"),
        ({"Authorization": "Bearer " + "x" * 5000}, "1002"),
    ],
)
def test_bad_credentials_get_401_json(live_server, headers, code, alice):
    _assert_401(_get(live_server, headers), code)


def test_wrong_secret_gets_401(live_server, alice_key):
    key_id = alice_key.split(".")[0]
    _assert_401(_get(live_server, {"Authorization": f"Bearer {key_id}.wrongsecret"}), "1002")


def test_revoked_key_gets_401(live_server, alice, alice_key):
    ApiKey.objects.filter(user=alice).update(revoked_at=timezone.now())
    _assert_401(_get(live_server, {"Authorization": f"Bearer {alice_key}"}), "1004")


def test_disabled_account_gets_401(live_server, alice, alice_key):
    alice.is_active = False
    alice.save()
    _assert_401(_get(live_server, {"Authorization": f"Bearer {alice_key}"}), "1004")


def _jwt(key: str, exp_ms: int, secret: str | None = None) -> str:
    key_id, real_secret = key.split(".")
    payload = {"api_key": key_id, "exp": exp_ms, "timestamp": int(time.time() * 1000)}
    return jwt.encode(payload, secret or real_secret, algorithm="HS256", headers={"sign_type": "SIGN"})


def test_expired_jwt_gets_401(live_server, alice_key):
    token = _jwt(alice_key, int(time.time() * 1000) - 1000)
    _assert_401(_get(live_server, {"Authorization": f"Bearer {token}"}), "1003")


def test_jwt_signed_with_another_secret_gets_401(live_server, alice_key):
    token = _jwt(alice_key, int(time.time() * 1000) + 60_000, secret="not-the-secret")
    _assert_401(_get(live_server, {"Authorization": f"Bearer {token}"}), "1002")


def test_valid_jwt_passes(live_server, alice_key):
    token = _jwt(alice_key, int(time.time() * 1000) + 60_000)
    assert _get(live_server, {"Authorization": f"Bearer {token}"}).status_code == 200


def test_sdk_raises_authentication_error_for_a_bad_key(live_server, alice):
    from zhipuai import ZhipuAI
    from zhipuai.core._errors import APIAuthenticationError

    client = ZhipuAI(api_key="abc.def", base_url=f"{live_server.url}/api/paas/v4", max_retries=0)
    with pytest.raises(APIAuthenticationError):
        _models(client)


def test_unknown_endpoint_is_json_404(live_server, alice_key):
    response = httpx.get(
        f"{live_server.url}/api/paas/v4/nothing/here", headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "404"


def test_wrong_method_is_json_405(live_server, alice_key):
    response = httpx.post(f"{live_server.url}/api/paas/v4/models", headers={"Authorization": f"Bearer {alice_key}"})
    assert response.status_code == 405
    assert "error" in response.json()


def test_staff_sees_restricted_models(live_server, alice, alice_key):
    alice.is_staff = True
    alice.save()
    response = _get(live_server, {"Authorization": f"Bearer {alice_key}"})
    assert "glm-4-0520" in [m["id"] for m in response.json()["data"]]


def test_models_lists_the_callers_own_fine_tuned_models(live_server, alice, bob, alice_key, tiny_base):
    from django.utils import timezone

    from jobs import services
    from modelcards.models import FineTunedModel

    from .jobs_support import chat_lines, make_card, make_dataset

    job, _ = services.job_create(
        user=alice, base_model=tiny_base, training_dataset=make_dataset(alice, chat_lines()), suffix="mine"
    )
    make_card(job)
    ids = {m["id"]: m for m in _get(live_server, {"Authorization": f"Bearer {alice_key}"}).json()["data"]}
    assert ids[job.fine_tuned_model]["owned_by"] == "alice" and ids[job.fine_tuned_model]["parent"] == "tiny-test"
    assert ids[job.fine_tuned_model]["fine_tuning_job"] == job.public_id
    _key, bob_secret = ApiKey.create_for(user=bob, name="bob's")
    bobs = [m["id"] for m in _get(live_server, {"Authorization": f"Bearer {bob_secret}"}).json()["data"]]
    assert job.fine_tuned_model not in bobs and "smollm2-135m-instruct" in bobs
    FineTunedModel.objects.filter(code=job.fine_tuned_model).update(deleted_at=timezone.now())
    after = [m["id"] for m in _get(live_server, {"Authorization": f"Bearer {alice_key}"}).json()["data"]]
    assert job.fine_tuned_model not in after
