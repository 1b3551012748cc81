"""Login, the console's login wall, the account page and the language switch."""

from __future__ import annotations

import pytest

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


def test_console_pages_need_a_login(client):
    for url in ["/console/", "/console/account/", "/console/api-keys/"]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/console/login/?next=")


def test_root_redirects_to_console(client):
    assert client.get("/")["Location"] == "/console/"


def test_wrong_password_says_so_and_keeps_the_username(client, alice):
    response = client.post("/console/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Wrong username or password" in html
    assert 'value="alice"' in html


def test_login_then_overview_shows_real_counts(client, alice):
    response = client.post("/console/login/", {"username": "alice", "password": "alice-pass-123"}, follow=True)
    html = response.content.decode()
    assert "Overview" in html
    assert "No API key yet." in html  # empty state that says what to do next
    ApiKey.create_for(user=alice, name="k")
    assert "Manage keys" in client.get("/console/").content.decode()


def test_logout_needs_post_and_logs_out(alice_client):
    assert alice_client.post("/console/logout/").status_code == 302
    assert alice_client.get("/console/").status_code == 302


def test_account_page_has_one_phone_field_and_saving_the_profile_keeps_the_verified_phone(alice_client, alice):
    from django.utils import timezone

    alice.phone, alice.phone_verified_at = "+8613800138000", timezone.now()
    alice.save()
    html = alice_client.get("/console/account/").content.decode()
    assert html.count('name="phone"') == 1
    response = alice_client.post(
        "/console/account/",
        {
            "first_name": "Alice",
            "last_name": "",
            "email": "alice@example.com",
            "phone": "+8613900139000",
            "language": "en",
        },
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.first_name == "Alice"
    assert alice.phone == "+8613800138000" and alice.phone_verified_at is not None


def test_a_new_phone_number_takes_a_code_and_is_stored_in_e164(alice_client, alice):
    from notifications.models import PhoneVerification

    response = alice_client.post("/console/account/phone/send/", {"phone": "138 0013 8000"}, follow=True)
    assert "A code was sent to +8613800138000" in response.content.decode()
    assert PhoneVerification.objects.get(user=alice).phone == "+8613800138000"
    alice.refresh_from_db()
    assert alice.phone == ""  # only a verified code makes it the account's number


def test_a_bad_phone_number_says_so_and_sends_nothing(alice_client, alice):
    from notifications.models import PhoneVerification

    response = alice_client.post("/console/account/phone/send/", {"phone": "+1 555"}, follow=True)
    assert "not a valid phone number" in response.content.decode()
    assert not PhoneVerification.objects.filter(user=alice).exists()


def test_language_switch_saves_choice_and_renders_chinese(alice_client, alice):
    response = alice_client.post("/console/language/", {"language": "zh-hans", "next": "/console/"})
    assert response.status_code == 302 and response["Location"] == "/console/"
    alice.refresh_from_db()
    assert alice.language == "zh-hans"
    html = alice_client.get("/console/").content.decode()
    assert "概览" in html and "API 密钥" in html
    assert 'lang="zh-hans"' in html


def test_language_switch_refuses_foreign_redirects(alice_client):
    response = alice_client.post("/console/language/", {"language": "en", "next": "https://evil.example/"})
    assert response["Location"] == "/console/"


def test_login_page_can_switch_language_before_login(client):
    client.post("/console/language/", {"language": "zh-hans", "next": "/console/login/"})
    assert "登录" in client.get("/console/login/").content.decode()


def test_navigation_shows_only_pages_that_exist(alice_client, alice):
    html = alice_client.get("/console/").content.decode()
    assert 'href="/console/api-keys/"' in html
    assert ">Admin<" not in html.replace("</span>", "")  # not staff
    alice.is_staff = True
    alice.save()
    assert 'href="/admin/"' in alice_client.get("/console/").content.decode()
