"""A person in Chromium uploads a broken file and sees its line errors; then a good one and its preview."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from datasets.models import Dataset
from datasets.services import dataset_delete

from .datasets_support import sample

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def login(page, live_server):
    page.goto(f"{live_server.url}/console/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.wait_for_selector("text=Overview")


def test_upload_broken_file_and_see_line_errors(page, live_server, alice, celery_worker, screenshot_dir):
    login(page, live_server)
    page.click("nav.sidenav >> text=Datasets")
    page.wait_for_selector("[data-testid=empty-state]")
    page.screenshot(path=str(screenshot_dir / "datasets-empty.png"))
    page.click("[data-testid=upload-link]")
    page.wait_for_url("**/console/datasets/upload/")
    page.wait_for_load_state("load")  # upload.js is in place before a file is chosen
    try:
        page.set_input_files("#id_file", str(sample("broken_chat.jsonl")))
        expect(page.locator("#chosen-file")).to_contain_text("broken_chat.jsonl")
        page.select_option("#id_category", "chat")
        page.screenshot(path=str(screenshot_dir / "dataset-upload.png"), full_page=True)
        page.click("#upload-button")
        page.wait_for_url("**/console/datasets/*/")
        # The page polls the live partial until the worker is done, then shows the errors.
        page.wait_for_selector("[data-testid=errors]", timeout=60000)
        rows = page.locator("[data-testid=errors] tbody tr")
        assert rows.count() == 8
        lines = [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())]
        assert lines == ["3", "4", "5", "7", "8", "9", "11", "12"]
        errors_text = page.locator("[data-testid=errors]").inner_text()
        assert "messages[0].role" in errors_text and 'Unknown role "bot"' in errors_text
        assert "truncated" in errors_text
        assert "This line repeats line 1 exactly." in page.locator("[data-testid=warnings]").inner_text()
        assert page.locator("[data-testid=example]").count() == 3
        page.screenshot(path=str(screenshot_dir / "dataset-broken.png"), full_page=True)

        # A good file: drag-and-drop path is the same input; the preview shows a conversation.
        page.goto(f"{live_server.url}/console/datasets/upload/")
        page.set_input_files("#id_file", str(sample("function_call.jsonl")))
        page.click("#upload-button")
        page.wait_for_url("**/console/datasets/*/")
        page.wait_for_selector("[data-testid=ready-banner]", timeout=60000)
        assert page.locator("[data-testid=stat-examples]").inner_text() == "6"
        assert "function call" in page.locator("[data-testid=stats]").inner_text()
        assert page.locator(".tool-call").count() >= 5
        page.screenshot(path=str(screenshot_dir / "dataset-function-call.png"), full_page=True)

        page.goto(f"{live_server.url}/console/datasets/")
        table = page.locator("[data-testid=dataset-table]").inner_text()
        assert "broken_chat" in table and "function_call" in table and "Invalid" in table and "Ready" in table
        page.screenshot(path=str(screenshot_dir / "datasets-list.png"))
    finally:
        for dataset in Dataset.objects.filter(owner=alice):
            dataset_delete(dataset=dataset)


def test_client_side_checks_before_upload(page, live_server, alice, tmp_path):
    login(page, live_server)
    page.goto(f"{live_server.url}/console/datasets/upload/")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    page.set_input_files("#id_file", str(empty))
    assert "empty" in page.locator("#upload-error").inner_text()
    page.click("#upload-button")
    assert page.url.endswith("/console/datasets/upload/") and not Dataset.objects.exists()
