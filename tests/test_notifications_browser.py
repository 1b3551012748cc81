"""The unread badge in the top bar updates without a reload; the centre marks read."""

from __future__ import annotations

import pytest

from notifications.models import Notification

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_badge_counts_new_notifications_without_a_reload(page, live_server, alice, bob, settings, screenshot_dir):
    settings.NOTIFICATIONS_BADGE_POLL_SECONDS = 1
    page.goto(f"{live_server.url}/console/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.wait_for_selector("text=Overview")
    assert page.locator("[data-testid=unread-count]").count() == 0
    page.evaluate("window.notReloaded = true")
    Notification.objects.create(user=bob, event="training.succeeded", event_key="b1", title="bob's")
    Notification.objects.create(
        user=alice,
        event="training.succeeded",
        event_key="a1",
        title="Task support-bot ok",
        url=f"{live_server.url}/console/jobs/",
    )
    Notification.objects.create(
        user=alice, event="training.failed", event_key="a2", title="Task other failed", level="error"
    )
    page.wait_for_selector("[data-testid=unread-count]:has-text('2')", timeout=10000)
    assert page.evaluate("window.notReloaded") is True  # the same page, updated in place
    page.click("[data-testid=notification-badge]")
    page.wait_for_selector("h1:has-text('Notifications')")
    assert page.locator("[data-testid=notification]").count() == 2 and "bob's" not in page.content()
    page.screenshot(path=str(screenshot_dir / "notifications-centre.png"), full_page=True)
    page.click("[data-testid=mark-all-read]")
    page.wait_for_selector("text=2 notifications marked read.")
    assert page.locator("[data-testid=unread-count]").count() == 0
    assert Notification.objects.filter(user=bob, read_at__isnull=True).count() == 1


def test_bind_a_phone_on_the_account_page(page, live_server, alice, screenshot_dir):
    from notifications.models import SentSms

    page.goto(f"{live_server.url}/console/account/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.fill("#bind-phone", "138 0013 8000")
    page.click("button:has-text('Send code')")
    page.wait_for_selector("text=A code was sent to +8613800138000")
    shown = page.locator("[data-testid=dev-sms]").first.inner_text()
    code = SentSms.objects.get(user=alice).body.split()[4].rstrip(".")
    assert code in shown  # the development backend shows the user what would have been sent
    page.fill("#phone-code", code)
    page.click("button:has-text('Verify')")
    page.wait_for_selector("[data-testid=phone-verified]")
    page.screenshot(path=str(screenshot_dir / "account-phone-verified.png"), full_page=True)
    alice.refresh_from_db()
    assert alice.phone == "+8613800138000" and alice.phone_verified_at is not None
    page.goto(f"{live_server.url}/console/notifications/preferences/")
    page.uncheck("input[value='training.succeeded:sms']")
    page.click("button:has-text('Save')")
    page.wait_for_selector("text=Your notification settings were saved.")
    page.screenshot(path=str(screenshot_dir / "notification-preferences.png"), full_page=True)
    assert not page.is_checked("input[value='training.succeeded:sms']")
    assert page.is_checked("input[value='training.failed:sms']")
