"""A person in Chromium: log in, switch to Chinese, create an API key."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_switch_language_and_create_key(page, live_server, alice, screenshot_dir):
    page.goto(f"{live_server.url}/console/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "wrong")
    page.click("button.primary")
    assert page.locator(".form-error").inner_text().startswith("Wrong username or password")
    assert page.input_value("#id_username") == "alice"
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.wait_for_selector("text=Overview")
    page.screenshot(path=str(screenshot_dir / "overview-en.png"))

    page.click("[data-testid=lang-zh-hans]")
    page.wait_for_selector("h1:has-text('概览')")
    page.click("nav.sidenav >> text=API 密钥")
    page.fill("#id_name", "浏览器测试")
    page.click("button:has-text('创建 API 密钥')")
    key = page.wait_for_selector("[data-testid=new-key]").inner_text()
    assert len(key.split(".")) == 2
    assert page.locator("table.table").inner_text().count("浏览器测试") == 1
    page.screenshot(path=str(screenshot_dir / "api-keys-zh.png"), full_page=True)
    alice.refresh_from_db()
    assert alice.language == "zh-hans"
