"""The console's own 404, 403 and 500 pages: in its layout, in both languages, and for 404 and 403 with DEBUG on too
(Django's technical pages list every URL pattern and have no way back). API paths keep their JSON errors."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import path

from accounts.models import ApiKey
from console import urls as console_urls

pytestmark = pytest.mark.django_db


def _forbidden(request):
    raise PermissionDenied


def _broken(request):
    raise RuntimeError("a bug")


# This module is also the URLconf of the tests marked below: the console's, plus views that fail on purpose.
urlpatterns = [path("boom/403/", _forbidden), path("boom/500/", _broken), *console_urls.urlpatterns]
handler500 = console_urls.handler500


@pytest.fixture
def debug(settings):
    """Development, as `./run up` runs."""
    settings.DEBUG = True


def _error_page(response, status: int) -> str:
    html = response.content.decode()
    assert response.status_code == status, html[:500]
    assert f'data-testid="error-page" data-status="{status}"' in html, html[:2000]
    assert "URLconf" not in html and "Traceback" not in html and "DEBUG = True" not in html
    return html


def test_another_users_object_is_the_consoles_404_page_with_debug_on(debug, alice, bob, client):
    key, _secret = ApiKey.create_for(user=alice, name="alice's key")
    client.force_login(bob)
    html = _error_page(client.get(f"/console/api-keys/{key.pk}/revoke/"), 404)
    assert "Page not found" in html and "alice" not in html
    # In the console's layout, with the way back.
    assert 'class="sidenav"' in html and 'data-testid="error-back"' in html and 'href="/console/"' in html
    # A URL that matches nothing, likewise.
    html = _error_page(client.get("/console/no-such-page/"), 404)
    assert "/console/no-such-page/" in html and 'class="sidenav"' in html


def test_404_page_for_a_visitor_offers_the_sign_in(debug, client):
    html = _error_page(client.get("/nothing-here/"), 404)
    assert 'href="/console/login/"' in html and 'class="sidenav"' not in html


def test_404_page_in_chinese(debug, alice, client):
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    client.force_login(alice)
    html = _error_page(client.get("/console/no-such-page/"), 404)
    assert 'lang="zh-hans"' in html and "页面不存在" in html and "返回控制台" in html


def test_a_missing_slash_still_redirects_with_debug_on(debug, alice_client):
    response = alice_client.get("/console/account")
    assert response.status_code == 301 and response["Location"] == "/console/account/"


@pytest.mark.urls("tests.test_error_pages")
@pytest.mark.parametrize("debug_on", [True, False])
def test_403_is_the_consoles_page(settings, alice_client, debug_on):
    settings.DEBUG = debug_on
    html = _error_page(alice_client.get("/boom/403/"), 403)
    assert "Not allowed" in html and 'class="sidenav"' in html


@pytest.mark.urls("tests.test_error_pages")
def test_500_is_the_consoles_page_in_both_languages(alice, settings):
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    html = _error_page(client.get("/boom/500/"), 500)
    assert "Something went wrong" in html and 'data-testid="error-back"' in html and "a bug" not in html
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    html = _error_page(client.get("/boom/500/"), 500)
    assert "出错了" in html


def test_api_paths_keep_their_json_errors_with_debug_on(debug, client, alice_key):
    response = client.get("/api/paas/v4/no-such-endpoint")
    assert response.status_code == 404 and response.json()["error"]["code"] == "404"
    response = client.get(
        "/api/paas/v4/fine_tuning/jobs/ftjob-nothing", headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert response.status_code == 404 and "error" in response.json()
