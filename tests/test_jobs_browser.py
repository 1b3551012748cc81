"""A person in Chromium creates a task and watches its progress bar and loss chart advance."""

from __future__ import annotations

import pytest

from jobs.models import FineTuningJob

from .jobs_support import chat_lines, make_dataset, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _progress(page) -> float:
    return float(page.get_attribute("[data-testid=progress]", "aria-valuenow") or 0)


def _points(page) -> int:
    line = page.query_selector("[data-testid=train-line]")
    return len((line.get_attribute("points") or "").split()) if line else 0


def test_watch_a_task_train(page, live_server, alice, tiny_base, training_worker, screenshot_dir):
    dataset = make_dataset(alice, chat_lines(48), name="widgets")
    page.goto(f"{live_server.url}/console/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.click("nav.sidenav >> text=Fine-tuning tasks")
    page.click("text=Create fine-tuning task >> nth=0")
    page.select_option("#id_base_model", "tiny-test")
    page.select_option("#id_training_dataset", str(dataset.pk))
    page.fill("#id_n_epochs", "40")  # long enough to watch; cancelled at the end
    page.fill("#id_batch_size", "1")
    page.fill("#id_suffix", "browser")
    # The live estimate follows the fields as they change.
    page.wait_for_function("document.querySelector('#estimate').innerText.includes('tokens × 40 epochs')")
    assert page.inner_text("[data-testid=cost]") == "0.7680"  # 1,920 tokens × 40 epochs × 0.01 / 1,000
    page.screenshot(path=str(screenshot_dir / "job-create.png"), full_page=True)
    page.click("button:has-text('Create task')")
    page.wait_for_selector("[data-testid=status]")
    job = FineTuningJob.objects.get(owner=alice)

    wait_for(
        lambda: page.query_selector("[data-testid=progress]") and _progress(page) > 0,
        timeout=120,
        what="the progress bar to move",
    )
    first_progress, first_points = _progress(page), _points(page)
    wait_for(
        lambda: _progress(page) > first_progress + 5 and _points(page) > first_points,
        timeout=120,
        what="the bar and the chart to advance",
    )
    assert page.inner_text("[data-testid=status]") == "Running"
    page.screenshot(path=str(screenshot_dir / "job-running.png"), full_page=True)
    page.click("text=Cancel task")
    page.click("button:has-text('Cancel task')")
    wait_for(lambda: page.inner_text("[data-testid=status]") == "Cancelled", timeout=30, what="cancelled")
    job.refresh_from_db()
    assert job.status == "cancelled"
