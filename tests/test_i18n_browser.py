"""The dataset page's line errors follow the language switch in a real browser (issue 17, item 9)."""

from __future__ import annotations

import pytest

from .datasets_support import uploaded
from .test_i18n_messages import speak

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_switching_language_in_chromium_switches_the_line_errors(page, live_server, alice, alice_media, client):
    """Uploaded in Chinese; the reader switches to English on the page and the errors follow, then back."""
    speak(alice, "zh-hans")
    client.force_login(alice)
    dataset = uploaded(client, "broken_chat.jsonl", category="chat")
    page.goto(f"{live_server.url}/console/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.wait_for_selector("h1:has-text('概览')")
    page.goto(f"{live_server.url}/console/datasets/{dataset.public_id}/")
    errors = page.locator("[data-testid=errors]")
    assert '未知角色 "bot"' in errors.inner_text()
    assert "系统" in page.locator("[data-testid=preview]").inner_text()
    assert page.title().endswith("微调控制台")
    page.click("[data-testid=lang-en]")
    page.wait_for_selector("[data-testid=lang-en][aria-current=true]")
    text = errors.inner_text()
    assert 'Unknown role "bot"' in text and "column" in text and "未知角色" not in text
    assert page.title().endswith("Fine-tuning Console")
    page.click("[data-testid=lang-zh-hans]")
    page.wait_for_selector("[data-testid=lang-zh-hans][aria-current=true]")
    assert '未知角色 "bot"' in errors.inner_text()
