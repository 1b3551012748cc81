"""Guessing is throttled: sign-ins per account and per client address (django-axes), API requests per key, failed
API authentications per address; each answer says how long to wait."""

from __future__ import annotations

import pytest
from django.test import override_settings

from accounts.models import ApiKey

from .conftest import make_user

pytestmark = pytest.mark.django_db

LOGIN = "/console/login/"


def _login(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_wrong_passwords_lock_the_account_and_say_for_how_long(client, alice):
    for _ in range(4):
        response = _login(client, "alice", "wrong")
        assert response.status_code == 200  # the form again, with its error
    assert _login(client, "alice", "wrong").status_code == 429  # the fifth locks the account
    response = _login(client, "alice", "alice-pass-123")  # the right password no longer helps
    assert response.status_code == 429
    assert response["Retry-After"] == str(15 * 60)
    text = response.content.decode()
    assert "Too many failed sign-ins for this account or from this address. Try again in 15 minutes." in text
    assert "_auth_user_id" not in client.session
    # From another address the account is still locked.
    assert _login(client, "alice", "alice-pass-123", address="10.0.0.2").status_code == 429


def test_guessing_many_accounts_from_one_address_locks_the_address(client, alice, bob):
    for name in ("carol", "dave", "erin", "frank", "grace"):
        _login(client, name, "guess", address="10.0.0.9")
    assert _login(client, "bob", "bob-pass-123", address="10.0.0.9").status_code == 429
    # bob from his own address is not affected.
    response = _login(client, "bob", "bob-pass-123", address="10.0.0.3")
    assert response.status_code == 302


def test_a_successful_sign_in_clears_the_accounts_count(client, alice):
    for _ in range(4):
        _login(client, "alice", "wrong", address="10.0.0.4")
    assert _login(client, "alice", "alice-pass-123", address="10.0.0.4").status_code == 302
    client.logout()
    for _ in range(4):
        _login(client, "alice", "wrong", address="10.0.0.5")
    assert _login(client, "alice", "alice-pass-123", address="10.0.0.5").status_code == 302


def test_the_lockout_page_is_in_the_readers_language(client, alice):
    for _ in range(5):
        _login(client, "alice", "wrong")
    response = client.post(
        LOGIN, {"username": "alice", "password": "x"}, REMOTE_ADDR="10.0.0.1", HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert response.status_code == 429
    assert "15 分钟" in response.content.decode()


def test_the_admin_sign_in_is_throttled_too(client):
    make_user("root", is_staff=True, is_superuser=True)
    for _ in range(5):
        client.post("/admin/login/", {"username": "root", "password": "wrong"}, REMOTE_ADDR="10.0.0.6")
    response = client.post("/admin/login/", {"username": "root", "password": "root-pass-123"}, REMOTE_ADDR="10.0.0.6")
    assert response.status_code == 429


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"]["code"] == code, body
    return body["error"]


@override_settings(API_REQUESTS_PER_MINUTE=3)
def test_api_requests_a_minute_per_key_get_429_with_retry_after(client, alice):
    _key, text = ApiKey.create_for(user=alice, name="a")
    _key2, other = ApiKey.create_for(user=alice, name="b")
    for _ in range(3):
        assert client.get("/api/paas/v4/files", HTTP_AUTHORIZATION=f"Bearer {text}").status_code == 200
    response = client.get("/api/paas/v4/fine_tuning/jobs", HTTP_AUTHORIZATION=f"Bearer {text}")
    error = _error(response, 429, "1303")
    assert "More than 3 requests a minute with this key" in error["message"]
    assert 1 <= int(response["Retry-After"]) <= 61
    assert "x-should-retry" not in response  # the SDK retries a 429, after Retry-After
    # Another key has its own count.
    assert client.get("/api/paas/v4/files", HTTP_AUTHORIZATION=f"Bearer {other}").status_code == 200


@override_settings(API_AUTH_FAILURES_PER_MINUTE=5)
def test_wrong_api_secrets_from_one_address_get_429(client, alice):
    _key, text = ApiKey.create_for(user=alice, name="a")
    key_id = text.split(".")[0]
    for i in range(5):
        response = client.get(
            "/api/paas/v4/files", HTTP_AUTHORIZATION=f"Bearer {key_id}.wrong{i}", REMOTE_ADDR="10.1.0.1"
        )
        _error(response, 401, "1002")
    response = client.get("/api/paas/v4/files", HTTP_AUTHORIZATION=f"Bearer {key_id}.wrong", REMOTE_ADDR="10.1.0.1")
    error = _error(response, 429, "1305")
    assert "failed authentications a minute from 10.1.0.1" in error["message"]
    assert int(response["Retry-After"]) >= 1
    # Even the right secret waits from that address; another address is not affected.
    _error(client.get("/api/paas/v4/files", HTTP_AUTHORIZATION=f"Bearer {text}", REMOTE_ADDR="10.1.0.1"), 429, "1305")
    assert (
        client.get("/api/paas/v4/files", HTTP_AUTHORIZATION=f"Bearer {text}", REMOTE_ADDR="10.1.0.2").status_code == 200
    )
