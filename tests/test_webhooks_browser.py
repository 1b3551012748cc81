"""A person in Chromium registers a webhook endpoint, copies its secret, sends a test event and sees it arrive."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from notifications.models import WebhookEndpoint

from . import services as test_services
from .test_webhooks import Receiver

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

QUEUE = "webhooks-browser"


def test_register_an_endpoint_send_a_test_event_and_delete_it(page, live_server, alice, settings, screenshot_dir):
    from django.db import connection

    settings.WEBHOOKS_ALLOW_PRIVATE = True
    settings.NOTIFICATIONS_QUEUE = QUEUE
    receiver = Receiver()
    worker = test_services.start_worker(
        connection.settings_dict["NAME"],
        queues=QUEUE,
        name="webhooks-browser",
        extra_env={"NOTIFICATIONS_QUEUE": QUEUE, "WEBHOOKS_ALLOW_PRIVATE": "true"},
    )
    try:
        page.goto(f"{live_server.url}/console/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "alice-pass-123")
        page.click("button.primary")
        page.wait_for_selector("text=Overview")
        page.click("[data-testid=user-menu]")
        page.click(".user-menu >> text=Webhooks")
        expect(page.locator(".empty")).to_contain_text("No endpoints yet")
        page.click("[data-testid=add-endpoint]")
        page.fill("#id_url", "ftp://example.com/hook")
        page.check("input[value='fine_tuning.job.succeeded']")
        page.click("button.primary")
        expect(page.locator(".field.has-error")).to_contain_text("https://")
        expect(page.locator("#id_url")).to_have_value("ftp://example.com/hook")
        page.screenshot(path=str(screenshot_dir / "webhook-form-error.png"), full_page=True)
        page.fill("#id_url", receiver.url)
        page.fill("#id_description", "CI pipeline")
        page.click("button.primary")
        secret = page.locator("[data-testid=webhook-secret]").inner_text()
        assert secret.startswith("whsec_") and secret == WebhookEndpoint.objects.get(user=alice).secret
        receiver.secret = secret
        page.screenshot(path=str(screenshot_dir / "webhook-created.png"), full_page=True)
        page.click("[data-testid=send-test]")
        # The attempts log polls: the worker's delivery shows up without a reload.
        expect(page.locator("[data-testid=attempt]")).to_have_count(1, timeout=30000)
        expect(page.locator("[data-testid=attempt]")).to_contain_text("webhook.test")
        expect(page.locator("[data-testid=attempt] .badge.ok")).to_have_text("200")
        assert page.locator("[data-testid=webhook-secret]").count() == 0  # shown once
        page.screenshot(path=str(screenshot_dir / "webhook-attempts.png"), full_page=True)
        [request] = receiver.requests
        assert request["verified"]
        page.click("text=Delete")
        page.click("[data-testid=confirm-delete]")
        expect(page.locator(".empty")).to_contain_text("No endpoints yet")
        assert not WebhookEndpoint.objects.exists()
    finally:
        test_services.stop(worker)
        receiver.close()
