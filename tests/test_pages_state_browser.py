"""In Chromium: a live refresh never replaces what a person is typing, and the buttons follow the state it shows."""

from __future__ import annotations

import pytest

from deployments.models import Deployment
from jobs.models import FineTuningJob
from modelcards.models import BaseModel

from .jobs_support import chat_lines, make_dataset, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(page, live_server, username: str = "alice") -> None:
    page.goto(f"{live_server.url}/console/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-pass-123")
    page.click("button.primary")
    page.wait_for_selector("nav.sidenav", state="attached")


def _deployment(owner) -> Deployment:
    return Deployment.objects.create(
        owner=owner,
        code=f"mine-{owner.pk}",
        status="running",
        base_model=BaseModel.objects.order_by("pk").first(),
        desired_instances=2,
        ready_instances=0,
    )


def test_typing_in_a_polled_form_survives_the_refresh(page, live_server, alice, screenshot_dir):
    deployment = _deployment(alice)
    _login(page, live_server)
    page.goto(f"{live_server.url}/console/deployments/{deployment.public_id}/")
    field = page.locator("[data-testid=scale-input]")
    assert field.input_value() == "2"
    field.click()
    field.fill("7")  # focused, not sent
    # The refresh goes on (it shows what changed) while the field keeps what was typed, and its focus.
    Deployment.objects.filter(pk=deployment.pk).update(status_reason="first refresh")
    page.wait_for_selector("[data-testid=reason] >> text=first refresh", timeout=10000)
    assert field.input_value() == "7"
    assert page.evaluate("document.activeElement && document.activeElement.name") == "instances"
    # Typed, then left without sending: still the person's value after further refreshes.
    page.click("h1")
    Deployment.objects.filter(pk=deployment.pk).update(status_reason="second refresh")
    page.wait_for_selector("[data-testid=reason] >> text=second refresh", timeout=10000)
    Deployment.objects.filter(pk=deployment.pk).update(status_reason="third refresh")
    page.wait_for_selector("[data-testid=reason] >> text=third refresh", timeout=10000)
    assert field.input_value() == "7"
    page.screenshot(path=str(screenshot_dir / "deployment-typing.png"), full_page=True)


def test_a_cancelled_deployment_loses_its_buttons_and_call_line_live(page, live_server, alice, screenshot_dir):
    deployment = _deployment(alice)
    _login(page, live_server)
    page.goto(f"{live_server.url}/console/deployments/{deployment.public_id}/")
    assert page.is_visible("[data-testid=cancel]")
    assert f'model="{deployment.code}"' in page.inner_text("[data-testid=call-it]")
    Deployment.objects.filter(pk=deployment.pk).update(status="cancelled")
    page.wait_for_selector("[data-testid=status] >> text=Cancelled", timeout=10000)
    wait_for(lambda: not page.query_selector("[data-testid=cancel]"), timeout=10, what="the cancel button to go")
    assert not page.query_selector("[data-testid=call-it]")
    assert not page.query_selector("[data-testid=scale-input]")
    page.screenshot(path=str(screenshot_dir / "deployment-cancelled-live.png"), full_page=True)


def test_a_task_watched_until_it_succeeds_offers_delete_not_cancel(page, live_server, alice, screenshot_dir):
    dataset = make_dataset(alice, chat_lines(8), name="few")
    job = FineTuningJob.objects.create(
        owner=alice,
        base_model=BaseModel.objects.order_by("pk").first(),
        training_dataset=dataset,
        fine_tuned_model="ft:watched",
        status="running",
    )
    _login(page, live_server)
    page.goto(f"{live_server.url}/console/jobs/{job.public_id}/")
    assert page.is_visible("[data-testid=cancel]")
    FineTuningJob.objects.filter(pk=job.pk).update(status="succeeded")
    page.wait_for_selector("[data-testid=status] >> text=Succeeded", timeout=10000)
    wait_for(lambda: page.query_selector("[data-testid=delete]"), timeout=10, what="the delete button")
    assert not page.query_selector("[data-testid=cancel]")
    assert "Cancel task" not in page.inner_text("main")
    page.screenshot(path=str(screenshot_dir / "job-succeeded-live.png"), full_page=True)


def test_a_phone_width_screen_has_a_menu_button_and_tables_scroll_in_their_card(
    browser, live_server, alice, screenshot_dir
):
    from deployments.models import Instance, Node

    deployment = _deployment(alice)
    node = Node.objects.create(name="a-node-with-a-rather-long-name-for-a-narrow-screen")
    for n in range(3):
        Instance.objects.create(
            deployment=deployment, node=node, runtime="transformers", state="ready", port=20000 + n, upstream_model="x"
        )
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    page = context.new_page()
    try:
        _login(page, live_server)
        assert not page.is_visible("nav.sidenav")
        page.click("[data-testid=menu-button]")
        page.wait_for_selector("nav.sidenav", state="visible")
        page.screenshot(path=str(screenshot_dir / "phone-menu-open.png"))
        page.click("nav.sidenav >> text=Private instances")
        page.wait_for_selector("[data-testid=ready]")
        page.goto(f"{live_server.url}/console/deployments/{deployment.public_id}/")
        page.wait_for_selector("[data-testid=instances]")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        table = page.locator("[data-testid=instances]")
        assert table.evaluate("t => t.scrollWidth > t.clientWidth")  # it scrolls inside its card
        page.screenshot(path=str(screenshot_dir / "phone-deployment.png"), full_page=True)
    finally:
        context.close()
