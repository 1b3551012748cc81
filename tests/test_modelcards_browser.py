"""A person in Chromium finds a fine-tuned model in the model square, copies its code, and deletes it."""

from __future__ import annotations

import pytest

from jobs import services as job_services
from jobs.models import FineTuningJob
from modelcards.models import FineTunedModel

from .jobs_support import chat_lines, make_card, make_dataset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_find_copy_and_delete_a_model(page, live_server, alice, tiny_base, screenshot_dir, tmp_path):
    job, _ = job_services.job_create(
        user=alice,
        base_model=tiny_base,
        suffix="support-bot",
        training_dataset=make_dataset(alice, chat_lines(), name="support chats"),
    )
    FineTuningJob.objects.filter(pk=job.pk).update(status="succeeded")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "adapter_config.json").write_text("{}")
    card = make_card(
        job,
        path=str(tmp_path / "final"),
        hyperparameters={"n_epochs": 3, "batch_size": 4},
        metrics={"final_loss": 0.21, "final_eval_loss": 0.25},
        trained_tokens=5760,
    )
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(f"{live_server.url}/console/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.click("nav.sidenav >> text=Model square")
    page.wait_for_selector("[data-testid=fine-tuned-cards]")
    page.screenshot(path=str(screenshot_dir / "model-square.png"), full_page=True)
    page.click(f"[data-testid='model-{card.code}'] >> text=Details")
    page.wait_for_selector("[data-testid=model-code]")
    page.click("[data-testid=copy-code]")
    assert page.evaluate("navigator.clipboard.readText()") == card.code
    page.screenshot(path=str(screenshot_dir / "fine-tuned-card.png"), full_page=True)
    page.click("[data-testid=delete-model]")
    assert card.code in page.inner_text("[data-testid=delete-consequences]")
    page.click("[data-testid=confirm-delete]")
    page.wait_for_selector("text=it can no longer be called")
    assert FineTunedModel.objects.get(pk=card.pk).deleted_at is not None
    page.goto(f"{live_server.url}/console/models/smollm2-135m-instruct/")
    page.wait_for_selector("[data-testid=capabilities]")
    page.screenshot(path=str(screenshot_dir / "base-card.png"), full_page=True)
