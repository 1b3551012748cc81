"""The API keys page: create (shown once, stored hashed), list, revoke with confirmation; owners only."""

from __future__ import annotations

import re

import pytest

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


def _create(client, name: str, **headers) -> str:
    response = client.post("/console/api-keys/", {"name": name}, **headers)
    assert response.status_code == 200
    return response.content.decode()


def test_create_shows_the_key_once_and_stores_only_a_hash(alice_client, alice):
    html = _create(alice_client, "pipeline")
    full = re.search(r'data-testid="new-key" id="new-key">([^<]+)<', html).group(1)
    key_id, secret = full.split(".")
    key = ApiKey.objects.get(user=alice)
    assert key.key_id == key_id and key.name == "pipeline"
    assert secret not in key.secret_hash and key.check_secret(secret)
    assert all(secret not in str(v) for v in ApiKey.objects.filter(pk=key.pk).values().first().values())
    # Shown once: the list page afterwards has only the prefix.
    listing = alice_client.get("/console/api-keys/").content.decode()
    assert secret not in listing and key.prefix in listing


def test_htmx_create_returns_only_the_partial(alice_client):
    html = _create(alice_client, "htmx", HTTP_HX_REQUEST="true")
    assert "<html" not in html and 'data-testid="new-key"' in html


def test_blank_or_duplicate_name_is_an_error_that_keeps_input(alice_client):
    assert "Give the key a name" in _create(alice_client, "   ") or "required" in _create(alice_client, "   ")
    _create(alice_client, "dup")
    html = _create(alice_client, "dup")
    assert "already have an active key named dup" in html and 'value="dup"' in html


def test_revoke_asks_first_then_revokes(alice_client, alice):
    key, _text = ApiKey.create_for(user=alice, name="old")
    confirm = alice_client.get(f"/console/api-keys/{key.pk}/revoke/")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    key.refresh_from_db()
    assert key.is_active
    response = alice_client.post(f"/console/api-keys/{key.pk}/revoke/", follow=True)
    key.refresh_from_db()
    assert not key.is_active
    assert "was revoked" in response.content.decode()


def test_other_users_keys_are_invisible_and_untouchable(client, alice, bob):
    key, text = ApiKey.create_for(user=alice, name="alice-secret-key")
    client.force_login(bob)
    assert "alice-secret-key" not in client.get("/console/api-keys/").content.decode()
    assert client.get(f"/console/api-keys/{key.pk}/revoke/").status_code == 404
    assert client.post(f"/console/api-keys/{key.pk}/revoke/").status_code == 404
    key.refresh_from_db()
    assert key.is_active


def test_key_list_paginates(alice_client, alice):
    for i in range(25):
        ApiKey.create_for(user=alice, name=f"k{i:02d}")
    first = alice_client.get("/console/api-keys/").content.decode()
    assert "Page 1 of 2" in first
    assert "k00" in alice_client.get("/console/api-keys/?page=2").content.decode()
