"""The chat path's API-key cache (accounts/keycache.py): a key that authenticated is found in Redis for
KEY_CACHE_SECONDS instead of the database; revoking it (the page, the admin), deactivating its user or deleting it
refuses it at once; a key never authenticates as another user; a JWT is remembered no longer than it is valid; with
Redis away the database decides; an address past its failed authentications waits even with a remembered key."""

from __future__ import annotations

import json
import time

import jwt
import pytest
import redis
from django.urls import reverse
from django.utils import timezone

from accounts import api, keycache
from accounts.models import ApiKey
from common.redis import redis_client

from .asgi_support import asgi_exchange, run_async
from .conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)
CHAT = "/api/paas/v4/chat/completions"
RAW = json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}).encode()


def chat(token: str, address: str = "10.9.0.1") -> tuple[int, dict]:
    """One chat call; an authenticated one answers 404 (no such model), a refused one 401 or 429."""
    status, _headers, body, _read = asgi_exchange(
        CHAT, [RAW], [(b"authorization", f"Bearer {token}".encode())], client=(address, 40000)
    )
    return status, json.loads(body)


def code_of(answer: tuple[int, dict]) -> tuple[int, str]:
    return answer[0], answer[1]["error"]["code"]


def only_the_cache_knows(key: ApiKey) -> None:
    """The database no longer accepts the key's secret (an update: no signal): only a remembered token passes."""
    ApiKey.objects.filter(pk=key.pk).update(secret_hash="0" * 64)


def pttl(key_id: str, token: str) -> int:
    with redis_client(1) as client:
        return client.pttl(keycache.entry_name(key_id, token))


def test_a_key_that_authenticated_is_remembered_for_a_few_seconds_then_checked_again():
    key, token = ApiKey.create_for(user=make_user("alice"), name="t")
    assert code_of(chat(token)) == (404, "model_not_found")
    assert 0 < pttl(key.key_id, token) <= keycache.KEY_CACHE_SECONDS * 1000
    only_the_cache_knows(key)
    assert code_of(chat(token)) == (404, "model_not_found")  # remembered: the database was not asked
    with redis_client(1) as client:  # as after KEY_CACHE_SECONDS
        client.delete(keycache.entry_name(key.key_id, token))
    assert code_of(chat(token)) == (401, "1002")


def test_revoking_a_key_on_its_page_or_in_the_admin_refuses_it_at_once_on_the_chat_path(client, admin_client):
    alice = make_user("alice")
    client.force_login(alice)
    keys = [ApiKey.create_for(user=alice, name=f"k{i}") for i in range(3)]
    for _key, token in keys:
        assert chat(token)[0] == 404
    (page_key, page_token), (action_key, action_token), (form_key, form_token) = keys

    assert client.post(reverse("console:api_key_revoke", args=[page_key.pk])).status_code == 302
    assert code_of(chat(page_token)) == (401, "1004")

    changelist = reverse("admin:console_apikey_changelist")
    admin_client.post(changelist, {"action": "revoke", "_selected_action": [action_key.pk]})
    assert code_of(chat(action_token)) == (401, "1004")

    form_key.revoked_at = timezone.now()  # the admin's change form saves the row
    form_key.save()
    assert code_of(chat(form_token)) == (401, "1004")


def test_deactivating_the_user_or_deleting_the_key_refuses_it_at_once():
    alice = make_user("alice")
    (_key, token), (other, other_token) = (ApiKey.create_for(user=alice, name=n) for n in ("a", "b"))
    assert chat(token)[0] == 404 and chat(other_token)[0] == 404
    other.delete()
    assert code_of(chat(other_token)) == (401, "1002")
    alice.is_active = False
    alice.save()
    assert code_of(chat(token)) == (401, "1004")


def test_a_second_users_key_never_authenticates_as_the_first():
    alice, bob = make_user("alice"), make_user("bob")
    (a_key, a_token), (b_key, b_token) = ApiKey.create_for(user=alice, name="a"), ApiKey.create_for(user=bob, name="b")

    def grant(token: str) -> keycache.Grant:
        return run_async(lambda: api.authenticate_throttled_async(f"Bearer {token}", "10.9.0.2"))

    for _round in range(2):  # from the database, then from the cache
        assert (grant(a_token).user.pk, grant(a_token).key_id) == (alice.pk, a_key.key_id)
        assert (grant(b_token).user.pk, grant(b_token).key_id) == (bob.pk, b_key.key_id)
    # What the gateway reads next (the cached routes' generation) comes with a cached key, in the same read.
    with redis_client(1) as client:
        client.set("test:read-along", b"7")
    along = run_async(lambda: api.authenticate_throttled_async(f"Bearer {a_token}", "10.9.0.2", ("test:read-along",)))
    assert along.user.pk == alice.pk and along.also == (b"7",)
    a_secret, b_secret = a_token.split(".")[1], b_token.split(".")[1]
    for mixed in (f"{b_key.key_id}.{a_secret}", f"{a_key.key_id}.{b_secret}"):
        assert code_of(chat(mixed)) == (401, "1002")
    # A JWT that names bob's key but is signed with alice's secret is not bob, nor alice.
    claims = {"api_key": b_key.key_id, "exp": int(time.time() * 1000) + 60_000, "timestamp": int(time.time() * 1000)}
    assert code_of(chat(jwt.encode(claims, a_secret, algorithm="HS256"))) == (401, "1002")


def test_a_jwt_is_remembered_no_longer_than_it_is_valid():
    key, token = ApiKey.create_for(user=make_user("alice"), name="t")
    now_ms = int(time.time() * 1000)
    signed = jwt.encode({"api_key": key.key_id, "exp": now_ms + 1500, "timestamp": now_ms}, token.split(".")[1])
    assert chat(signed)[0] == 404
    assert 0 < pttl(key.key_id, signed) <= 1500
    time.sleep(1.6)
    assert code_of(chat(signed)) == (401, "1003")  # expired: not from the cache


def test_with_redis_away_the_database_decides(monkeypatch):
    key, token = ApiKey.create_for(user=make_user("alice"), name="t")
    assert chat(token)[0] == 404  # remembered in Redis

    class Away:
        async def mget(self, names):
            raise redis.ConnectionError("away")

    monkeypatch.setattr(api, "async_redis_client", Away)
    assert chat(token)[0] == 404
    only_the_cache_knows(key)
    assert code_of(chat(token)) == (401, "1002")


def test_an_address_past_its_failed_authentications_waits_even_with_a_remembered_key(settings):
    settings.API_AUTH_FAILURES_PER_MINUTE = 2
    key, token = ApiKey.create_for(user=make_user("alice"), name="t")
    address = f"10.9.{int(time.time()) % 250}.3"
    assert chat(token, address)[0] == 404
    for _i in range(2):
        chat(f"{key.key_id}.wrong", address)
    status, body = chat(token, address)
    if status == 404:  # the minute turned between the calls: its count started again
        for _i in range(2):
            chat(f"{key.key_id}.wrong", address)
        status, body = chat(token, address)
    assert (status, body["error"]["code"]) == (429, "1305")
    assert chat(token, "10.9.0.4")[0] == 404  # another address is not held
