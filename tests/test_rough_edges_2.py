"""Issue 17, checked again: the CSRF failure page, the usage CSV's language, SMS limits per user, phone-width pages."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey
from deployments.models import ApiCall, Deployment
from jobs.models import FineTuningJob
from modelcards.models import BaseModel

from .jobs_support import chat_lines, make_card, make_dataset

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
    assert "so the page was reloaded. Try again." in html


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
        owner=alice,
        base_model=base,
        training_dataset=make_dataset(alice, chat_lines(20)),
        suffix="bot",
        fine_tuned_model="ft:base:bot:csv",
        status="succeeded",
        trained_tokens=5000,
        actual_cost=Decimal("0.05"),
        finished_at=timezone.now(),
    )
    return base


def test_usage_csv_headers_and_kinds_are_in_the_readers_language_and_numbers_stay_plain(alice, usage):
    client = Client()
    client.force_login(alice)
    rows = _usage_rows(client)
    assert rows[0] == [
        "Kind",
        "Date",
        "Model",
        "Calls",
        "Errors",
        "Prompt tokens",
        "Completion tokens",
        "Tokens",
        "Cost",
    ]
    assert [r[0] for r in rows[1:]] == ["Inference", "Training", "Total"]
    assert rows[1][5] == "3600" and rows[-1][3] == "3"  # no thousands separators: machine-readable
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    rows = _usage_rows(client)
    assert rows[0][:4] == ["类型", "日期", "模型", "调用次数"] and rows[0][-1] == "费用"
    assert rows[2][0] == "训练" and rows[1][5] == "3600" and rows[1][1].count("-") == 2  # ISO dates, plain numbers


LONG_CODE = "ft:glm-4-9b-chat:a-rather-long-suffix-for-a-narrow-screen:20261205abcdef0123456789"

# The elements that stick out past the right edge of the screen: empty when nothing overflows.
OVERFLOWING = """() => {
  const width = window.innerWidth;
  const out = [];
  for (const el of document.querySelectorAll("main *, header *, body > *")) {
    const box = el.getBoundingClientRect();
    if (box.width && box.right > width + 1) {
      let clipped = false;  // inside something that scrolls or clips: not an overflow of the page
      for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        const s = getComputedStyle(p);
        const scrolls = ["auto", "scroll", "hidden", "clip"].includes(s.overflowX);
        if (scrolls && p.getBoundingClientRect().right <= width + 1) {
          clipped = true; break;
        }
      }
      const name = el.tagName.toLowerCase() + (el.className ? "." + el.className : "");
      if (!clipped) out.push(name + " " + Math.round(box.right));
    }
  }
  return {scroll: document.documentElement.scrollWidth, width, out: out.slice(0, 8)};
}"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_main_pages_fit_a_phone_width_screen(browser, live_server, alice, screenshot_dir, language):
    """At 390 px: the menu button opens the menu, nothing is wider than the screen, long model codes wrap."""
    alice.language = language
    alice.save(update_fields=["language"])
    base = BaseModel.objects.order_by("pk").first()
    dataset = make_dataset(alice, chat_lines(20), name="customer-support-conversations-2026-export-final-v2.jsonl")
    job = FineTuningJob.objects.create(
        owner=alice,
        base_model=base,
        training_dataset=dataset,
        suffix="long",
        fine_tuned_model=LONG_CODE,
        status="succeeded",
        trained_tokens=123456,
        actual_cost=Decimal("1.25"),
        finished_at=timezone.now(),
    )
    make_card(job)
    deployment = Deployment.objects.create(
        owner=alice,
        code="support-bot-production-deployment-eu-1",
        status="running",
        base_model=base,
        desired_instances=1,
    )
    ApiCall.objects.create(user=alice, model=LONG_CODE, prompt_tokens=1200, completion_tokens=30, status_code=200)
    ApiKey.create_for(user=alice, name="a key for the production support bot in the EU region")
    pages = {
        "overview": "/console/",
        "datasets": "/console/datasets/",
        "dataset": f"/console/datasets/{dataset.public_id}/",
        "jobs": "/console/jobs/",
        "job-create": "/console/jobs/create/",
        "job": f"/console/jobs/{job.public_id}/",
        "models": "/console/models/",
        "model-card": f"/console/models/{LONG_CODE}/",
        "base-card": f"/console/models/{base.code}/",
        "deployments": "/console/deployments/",
        "deployment": f"/console/deployments/{deployment.public_id}/",
        "playground": "/console/playground/",
        "usage": "/console/usage/",
        "api-keys": "/console/api-keys/",
        "account": "/console/account/",
        "notifications": "/console/notifications/",
        "webhooks": "/console/webhooks/",
    }
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15000)
    try:
        page.goto(f"{live_server.url}/console/login/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "alice-pass-123")
        page.click("button.primary")
        page.wait_for_selector("nav.sidenav", state="attached")
        problems = {}
        for name, url in pages.items():
            response = page.goto(f"{live_server.url}{url}")
            assert response.status == 200, (name, response.status)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(screenshot_dir / f"phone-{language}-{name}.png"), full_page=True)
            result = page.evaluate(OVERFLOWING)
            if result["scroll"] > result["width"] or result["out"]:
                problems[name] = result
            assert not page.is_visible("nav.sidenav"), name
            # The top bar's controls stay on one line each (not "中" over "文").
            heights = page.eval_on_selector_all(
                ".lang-switch button, .user-menu summary", "els => els.map(e => e.getBoundingClientRect().height)"
            )
            assert heights and max(heights) < 34, (name, heights)
            page.click("[data-testid=menu-button]")
            page.wait_for_selector("nav.sidenav", state="visible")
            page.click("[data-testid=menu-button]")
        assert not problems, problems
    finally:
        context.close()


def test_a_failed_merged_build_names_no_server_path(alice, tiny_base, tmp_path):
    """Item 14: server paths are for staff. A build whose files are gone says which file, not where it was."""
    from deployments import exports
    from deployments.models import ExportStatus

    gone = tmp_path / "srv" / "console" / "var" / "results" / "ft-old"
    job = FineTuningJob.objects.create(
        owner=alice,
        base_model=tiny_base,
        suffix="old",
        status="succeeded",
        training_dataset=make_dataset(alice, chat_lines(20)),
        method="sft",
        training_type="lora",
        fine_tuned_model="ft:tiny:old:paths",
    )
    card = make_card(job, path=str(gone))
    failed = exports.merged_export_build(export_id=exports.merged_export_request(model=card).pk)
    assert failed.status == ExportStatus.FAILED
    assert str(tmp_path) not in failed.error and "/srv/console" not in failed.error, failed.error
    assert "ft-old" in failed.error and "has no files" in failed.error
    client = Client()
    client.force_login(alice)
    page = client.get(f"/console/models/{card.code}/").content.decode()
    assert 'data-testid="merged-error"' in page and str(tmp_path) not in page


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "[Errno 28] No space left on device: '/srv/console/var/scratch/export-3/model.safetensors'",
            "[Errno 28] No space left on device: '…/model.safetensors'",
        ),
        ("/home/ops/console/var/media/x has no files in the storage", "…/x has no files in the storage"),
        (
            "THUDM/glm-4-9b-chat is not in the local Hugging Face cache.",
            "THUDM/glm-4-9b-chat is not in the local Hugging Face cache.",
        ),
        (
            "see https://example.com/a/b and /health failed 3 times",
            "see https://example.com/a/b and /health failed 3 times",
        ),
    ],
)
def test_server_paths_are_cut_to_their_last_part(text, shown):
    from console.errors import without_server_paths

    assert without_server_paths(text) == shown


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_in_chromium_a_stale_form_says_to_reload(browser, live_server, alice, screenshot_dir):
    """The CSRF cookie gone (cleared, expired): a plain form shows the console's page, an HTMX one reloads."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15000)
    try:
        page.goto(f"{live_server.url}/console/login/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "alice-pass-123")
        page.click("button.primary")
        page.wait_for_selector("nav.sidenav")
        # An HTMX form (create an API key): the page reloads and says why; nothing was created.
        page.goto(f"{live_server.url}/console/api-keys/")
        context.clear_cookies(name="csrftoken")
        page.fill("#id_name", "late")
        with page.expect_navigation():
            page.click("button:has-text('Create API key')")
        page.wait_for_selector("text=so the page was reloaded. Try again.")
        assert not ApiKey.objects.filter(user=alice, name="late").exists()
        page.screenshot(path=str(screenshot_dir / "csrf-htmx-reloaded.png"), full_page=True)
        # A plain form (sign out): the console's 403 page, with the way back.
        context.clear_cookies(name="csrftoken")
        page.click("[data-testid=user-menu]")
        page.click("text=Log out")
        page.wait_for_selector("[data-testid=csrf-failed]")
        assert page.is_visible("nav.sidenav") and page.is_visible("[data-testid=error-back]")
        page.screenshot(path=str(screenshot_dir / "csrf-page.png"), full_page=True)
    finally:
        context.close()
