"""The SDK's signed tokens: timestamp required (ms), lifetime and clock skew bounded, each refusal its own message."""

from __future__ import annotations

import time

import jwt
import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def _token(key: str, **claims) -> str:
    key_id, secret = key.split(".")
    now_ms = int(time.time() * 1000)
    payload = {"api_key": key_id, "exp": now_ms + 180_000, "timestamp": now_ms, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm="HS256", headers={"sign_type": "SIGN"})


def _call(client, token: str):
    return client.get("/api/paas/v4/models", HTTP_AUTHORIZATION=f"Bearer {token}")


def _refused(response, code: str, words: str) -> str:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["error"]["code"] == code
    assert words in body["error"]["message"], body
    return body["error"]["message"]


def test_the_sdks_own_token_is_accepted(client, alice_key):
    from zhipuai.core._jwt_token import generate_token

    assert _call(client, generate_token(alice_key)).status_code == 200
    assert _call(client, _token(alice_key)).status_code == 200


def test_a_token_without_expiry_is_refused(client, alice_key):
    message = _refused(_call(client, _token(alice_key, exp=None)), "1002", "The token has no expiry (exp).")
    assert "timestamp" not in message  # its own message, not another refusal's
    _refused(_call(client, _token(alice_key, exp="never")), "1002", "The token has no expiry (exp).")


def test_a_token_without_timestamp_is_refused(client, alice_key):
    _refused(_call(client, _token(alice_key, timestamp=None)), "1002", "no timestamp")


def test_a_timestamp_in_seconds_or_not_a_number_is_refused(client, alice_key):
    _refused(_call(client, _token(alice_key, timestamp=int(time.time()))), "1002", "milliseconds (it reads as seconds)")
    _refused(_call(client, _token(alice_key, timestamp="now")), "1002", "must be a number of milliseconds")


def test_a_token_valid_for_33000_years_is_refused(client, alice_key):
    far = int((time.time() + 33_000 * 365 * 86400) * 1000)
    message = _refused(_call(client, _token(alice_key, exp=far)), "1002", "longer than the 3600 s allowed")
    assert "exp - timestamp" in message


@override_settings(API_JWT_MAX_LIFETIME=60)
def test_the_lifetime_limit_is_a_setting(client, alice_key):
    _refused(_call(client, _token(alice_key)), "1002", "valid for 180 s")
    now_ms = int(time.time() * 1000)
    assert _call(client, _token(alice_key, exp=now_ms + 50_000)).status_code == 200


def test_a_timestamp_ahead_of_the_clock_is_refused(client, alice_key):
    ahead = int((time.time() + 3600) * 1000)
    message = _refused(_call(client, _token(alice_key, timestamp=ahead, exp=ahead + 60_000)), "1002", "in the future")
    assert "300 s of clock skew" in message
    # A little skew is fine.
    near = int((time.time() + 30) * 1000)
    assert _call(client, _token(alice_key, timestamp=near, exp=near + 60_000)).status_code == 200


def test_an_expired_token_says_so(client, alice_key):
    past = int((time.time() - 600) * 1000)
    _refused(_call(client, _token(alice_key, timestamp=past - 60_000, exp=past)), "1003", "expired")
