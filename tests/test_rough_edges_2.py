"""Issue 17, checked again: the CSRF failure page, the usage CSV's language, SMS limits per user, phone-width pages."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from deployments.models import ApiCall
from jobs.models import FineTuningJob
from modelcards.models import BaseModel

from .jobs_support import chat_lines, make_dataset

pytestmark = pytest.mark.django_db


def _csrf_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.mark.parametrize("debug_on", [True, False])
def test_a_form_without_its_csrf_token_gets_the_consoles_403_page(settings, alice, debug_on):
    """An expired form (no or a stale token) is the console's page in its layout, not Django's bare one."""
    settings.DEBUG = debug_on
    client = _csrf_client(alice)
    response = client.post("/console/api-keys/", {"name": "late"})
    html = response.content.decode()
    assert response.status_code == 403, html[:500]
    assert 'data-testid="error-page" data-status="403"' in html, html[:2000]
    assert 'class="sidenav"' in html and 'data-testid="error-back"' in html
    assert "CSRF verification failed" not in html and "Help" not in html and "Traceback" not in html
    assert 'data-testid="csrf-failed"' in html and "Reload the page" in html


def test_the_csrf_page_in_chinese(alice):
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    client = _csrf_client(alice)
    client.get("/console/")  # sets the CSRF cookie; the form then posts a wrong token
    response = client.post("/console/api-keys/", {"name": "late", "csrfmiddlewaretoken": "x" * 64})
    html = response.content.decode()
    assert response.status_code == 403 and 'lang="zh-hans"' in html and "返回控制台" in html


def test_a_visitor_posting_a_stale_login_form_gets_the_page_with_the_sign_in(settings):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/console/login/", {"username": "a", "password": "b"})
    html = response.content.decode()
    assert response.status_code == 403 and 'data-testid="error-page"' in html
    assert 'href="/console/login/"' in html


def test_an_htmx_post_with_a_stale_token_reloads_the_page_which_says_why(alice):
    """htmx swaps no 403: without the reload the button would seem to do nothing."""
    client = _csrf_client(alice)
    response = client.post("/console/api-keys/", {"name": "late"}, headers={"HX-Request": "true"})
    assert response.status_code == 403 and response["HX-Refresh"] == "true"
    html = client.get("/console/api-keys/").content.decode()
    assert "The form was out of date" in html


def _usage_rows(client) -> list[list[str]]:
    response = client.get("/console/usage/export.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.fixture
def usage(alice):
    base = BaseModel.objects.order_by("pk").first()
    ApiCall.objects.bulk_create(
        ApiCall(user=alice, model=base.code, prompt_tokens=1200, completion_tokens=30, status_code=200)
        for _ in range(3)
    )
    FineTuningJob.objects.create(
        owner=alice, base_model=base, training_dataset=make_dataset(alice, chat_lines(20)), suffix="bot",
        fine_tuned_model="ft:base:bot:csv", status="succeeded", trained_tokens=5000, actual_cost=Decimal("0.05"),
        finished_at=timezone.now(),
    )
    return base


def test_usage_csv_headers_and_kinds_are_in_the_readers_language_and_numbers_stay_plain(alice, usage):
    client = Client()
    client.force_login(alice)
    rows = _usage_rows(client)
    assert rows[0] == ["Kind", "Date", "Model", "Calls", "Errors", "Prompt tokens", "Completion tokens", "Tokens",
                       "Cost"]
    assert [r[0] for r in rows[1:]] == ["Inference", "Training", "Total"]
    assert rows[1][5] == "3600" and rows[-1][3] == "3"  # no thousands separators: machine-readable
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    rows = _usage_rows(client)
    assert rows[0][:4] == ["类型", "日期", "模型", "调用次数"] and rows[0][-1] == "费用"
    assert rows[2][0] == "训练" and rows[1][5] == "3600" and rows[1][1].count("-") == 2  # ISO dates, plain numbers
