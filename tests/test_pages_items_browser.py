"""Issue 17's page items in Chromium, as a new user meets them: the evaluation headline's n (item 8), the create
form's errors and dataset picker (item 10), the models the experience center cannot serve (item 11) and the account
page's one phone field (item 13)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.utils import timezone

from datasets.models import Dataset
from jobs.models import FineTuningJob
from modelcards.models import BaseModel

from .jobs_support import chat_lines, make_dataset
from .test_experience import evaluated_job
from .test_pages_state_browser import _login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_evaluation_on_one_prompt_says_n_and_that_it_means_nothing(page, live_server, alice, screenshot_dir):
    """Item 8: "F1: base 0.09 → fine-tune 1.00" on one prompt of its own (and the 20 general ones) says n = 1 and
    how to get a real measure, on the card and on the compare page."""
    one = evaluated_job(alice, "one", task=1)
    twelve = evaluated_job(alice, "twelve", task=12)
    _login(page, live_server)
    page.goto(f"{live_server.url}/console/models/{one.fine_tuned_model}/")
    scores = page.locator("[data-testid=evaluation-scores]")
    assert "F1: base 0.09 → fine-tune 1.00" in scores.inner_text()
    assert page.locator("[data-testid=evaluation-n]").inner_text() == "n = 1 prompt"
    warning = page.locator("[data-testid=evaluation-too-few]")
    assert warning.is_visible()
    text = warning.inner_text()
    assert text.startswith("Not meaningful: scored on fewer than 10 prompts")
    assert "fine-tune with a validation file of at least 10 examples" in text
    page.screenshot(path=str(screenshot_dir / "evaluation-one-prompt.png"), full_page=True)

    page.goto(f"{live_server.url}/console/jobs/compare/?ids={one.public_id},{twelve.public_id}")
    row = page.locator("[data-testid=compare-evaluation] tr", has_text="Prompts scored")
    cells = row.locator("td").all_inner_texts()[1:]
    assert cells == ["1 (too few for the scores to mean much)", "12"], cells  # the general 20 are not the scores'
    page.screenshot(path=str(screenshot_dir / "compare-evaluation-n.png"), full_page=True)


def test_the_create_form_shows_every_error_at_its_field_and_keeps_what_was_typed(
    page, live_server, alice, tiny_base, screenshot_dir
):
    """Item 10: one submit with five bad fields shows the five errors at once, each at its field in the form's
    words; what was typed stays; two datasets named alike are told apart in the picker by date and size."""
    from datasets.services import human_bytes

    old = make_dataset(alice, chat_lines(10), name="support")
    new = make_dataset(alice, chat_lines(30), name="support")
    Dataset.objects.filter(pk=old.pk).update(created_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    Dataset.objects.filter(pk=new.pk).update(created_at=datetime(2025, 3, 4, 12, 0, tzinfo=UTC))
    _login(page, live_server)
    page.goto(f"{live_server.url}/console/jobs/create/")
    picker = page.locator("#id_training_dataset")
    labels = {
        o["value"]: o["text"]
        for o in picker.locator("option").evaluate_all("os => os.map(o => ({value: o.value, text: o.text}))")
    }
    assert labels[str(old.pk)].startswith("support") and labels[str(new.pk)].startswith("support")
    assert "2025-03-01" in labels[str(old.pk)] and human_bytes(old.bytes) in labels[str(old.pk)]
    assert "2025-03-04" in labels[str(new.pk)] and human_bytes(new.bytes) in labels[str(new.pk)]
    assert labels[str(old.pk)] != labels[str(new.pk)]

    page.select_option("#id_base_model", "tiny-test")
    page.select_option("#id_method", "dpo")  # on chat data: the dataset's error
    picker.select_option(str(old.pk))
    page.fill("#id_n_epochs", "0")
    page.fill("#id_batch_size", "lots")
    page.fill("#id_learning_rate_multiplier", "99")
    page.fill("#id_suffix", "Bad Suffix!")
    with page.expect_navigation():
        page.click("button:has-text('Create task')")
    assert not FineTuningJob.objects.exists()
    page.wait_for_selector(".field.has-error")
    errors = {}
    for block in page.locator(".field.has-error").all():
        name = block.locator("label").get_attribute("for").removeprefix("id_")
        errors[name] = block.locator(".error").all_inner_texts()
    assert errors.keys() == {"training_dataset", "n_epochs", "batch_size", "learning_rate_multiplier", "suffix"}
    assert errors["n_epochs"] == ["Enter a whole number from 1 to 50, or auto."]
    assert errors["batch_size"] == ["Enter a whole number from 1 to 256, or auto."]
    assert errors["learning_rate_multiplier"] == ["Enter a number from 0.01 to 10.0, or auto."]
    assert errors["suffix"] == ["Use at most 40 characters of a-z, 0-9, - and _ (no capitals or spaces)."]
    assert len(errors["training_dataset"]) == 1 and "DPO on tiny-test needs" in errors["training_dataset"][0]
    for field in ("n_epochs", "batch_size", "learning_rate_multiplier", "suffix"):
        assert page.locator(f"#id_{field}").evaluate("e => e.closest('.field').querySelector('.error') !== null")
    main = page.inner_text("main")
    assert "must be between" not in main and "n_epochs" not in main and "batch_size" not in main
    # What was typed and chosen is still there.
    assert page.input_value("#id_n_epochs") == "0" and page.input_value("#id_batch_size") == "lots"
    assert page.input_value("#id_learning_rate_multiplier") == "99"
    assert page.input_value("#id_suffix") == "Bad Suffix!"
    assert page.input_value("#id_method") == "dpo" and picker.input_value() == str(old.pk)
    page.screenshot(path=str(screenshot_dir / "job-create-errors.png"), full_page=True)


def test_the_experience_center_lists_what_it_cannot_serve_disabled_with_the_reason(
    page, live_server, alice, tiny_base, screenshot_dir
):
    """Item 11: a catalog model without weights here is listed, disabled, with the reason, before any Send; the
    page starts on one it can serve."""
    BaseModel.objects.filter(code="glm-4-flash").update(weights_source="local_dir", weights_location="/nowhere")
    reason = BaseModel.objects.get(code="glm-4-flash").capabilities().serve.reason
    assert reason
    chats = []
    page.on("request", lambda request: chats.append(request.url) if "/playground/chat/" in request.url else None)
    _login(page, live_server)
    page.goto(f"{live_server.url}/console/playground/?model=glm-4-flash")
    for select in ("#pg-model", "#pg-compare"):
        option = page.locator(f"{select} option[value='glm-4-flash']")
        assert option.is_disabled(), select
        assert option.get_attribute("title") == reason
        assert reason in option.text_content()
    chosen = page.input_value("#pg-model")
    assert chosen != "glm-4-flash" and BaseModel.objects.get(code=chosen).capabilities().serve
    page.wait_for_selector("[data-testid=pane]")
    assert page.locator(".pg-pane-title code").all_inner_texts() == [chosen]
    assert "glm-4-flash" not in page.inner_text("[data-testid=snippet]")
    page.click("[data-testid=not-servable] summary")
    listed = page.locator("[data-testid=not-servable] li", has_text="glm-4-flash")
    assert listed.is_visible() and reason in listed.inner_text()
    page.screenshot(path=str(screenshot_dir / "playground-not-servable.png"), full_page=True)
    assert chats == []  # all of it before any Send


def test_the_account_page_has_one_phone_field_and_keeps_the_verified_number(page, live_server, alice, screenshot_dir):
    """Item 13: one phone field; saving the profile keeps the verified phone; another number takes a code first."""
    alice.phone, alice.phone_verified_at = "+8613800138000", timezone.now()
    alice.save(update_fields=["phone", "phone_verified_at"])
    _login(page, live_server)
    page.goto(f"{live_server.url}/console/account/")
    assert page.locator("input[name=phone]").count() == 1 and page.locator("input[type=tel]").count() == 1
    assert page.locator("[data-testid=phone-verified]").is_visible()
    page.fill("#id_first_name", "Alice")
    with page.expect_navigation():
        page.click("form:has(#id_first_name) button[type=submit]")
    page.wait_for_selector("text=Your account was saved.")
    assert "+8613800138000" in page.inner_text("#phone-binding")
    assert page.locator("[data-testid=phone-verified]").is_visible()
    alice.refresh_from_db()
    assert alice.first_name == "Alice"
    assert alice.phone == "+8613800138000" and alice.phone_verified_at is not None

    page.fill("#bind-phone", "139 0013 9000")
    with page.expect_navigation():
        page.click("button:has-text('Send code')")
    page.wait_for_selector("text=A code was sent to +8613900139000")
    assert page.locator("#phone-code").is_visible()  # the change waits for the code
    assert "The 6-digit code sent to +8613900139000" in page.inner_text("#phone-binding")
    assert page.locator("[data-testid=phone-verified]").is_visible()
    page.screenshot(path=str(screenshot_dir / "account-phone-change.png"), full_page=True)
    alice.refresh_from_db()
    assert alice.phone == "+8613800138000" and alice.phone_verified_at is not None
