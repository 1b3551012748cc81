"""Experience center end to end on real processes: the console under uvicorn, a browser, and behind the gateway
either a stand-in model server whose pace the test sets (streaming token by token, side by side, Stop) or real
``transformers serve`` pool instances of the tiny model (the evaluation of a finished task)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from deployments import services as serving
from deployments.models import ApiCall, Deployment, Instance, Node
from experience import services
from experience.models import Evaluation
from jobs.models import FineTuningJob
from modelcards.models import BaseModel, FineTunedModel

from . import experience_upstream
from . import services as procs
from .asgi_support import run_async
from .conftest import make_user
from .jobs_support import chat_lines, make_dataset, wait_for
from .serving_support import free_port, serving_stack, tiny_lora_dir  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.worker, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def stack(serving_stack, transactional_db):  # noqa: F811 (the fixture imported above)
    """The live console (uvicorn, ASGI) on the test database, and the Celery worker."""
    return serving_stack


@pytest.fixture(scope="module")
def upstream():
    """The stand-in model server (its own process), and the log it writes of every request."""
    port = free_port()
    log = Path(settings.VAR_DIR) / f"upstream-{port}.jsonl"
    proc = experience_upstream.start(port, UPSTREAM_LOG=str(log), FAKE_DELAY="0.12")
    wait_for(lambda: _up(port), timeout=30, what="the stand-in model server")
    yield port, log
    procs.stop(proc)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _stand_in(owner, port: int, name: str) -> Deployment:
    """A running deployment whose one instance is the stand-in server (on a node that stays alive)."""
    node = Node.objects.update_or_create(
        name="stand-in", defaults={"heartbeat_at": timezone.now() + timedelta(days=1), "slots": 0}
    )[0]
    deployment = Deployment.objects.create(
        owner=owner,
        code=f"stand-in-{name}",
        base_model=BaseModel.objects.order_by("pk").first(),
        status="running",
        desired_instances=1,
        ready_instances=1,
    )
    Instance.objects.create(
        deployment=deployment, node=node, runtime="transformers", state="ready", upstream_model="stand-in", port=port
    )
    return deployment


def test_the_gateway_stops_a_generation_at_its_time_limit_and_cancels_a_call_whose_client_left(
    upstream, transactional_db, settings
):
    """Against the stand-in server (0.12 s a token): a stream past SERVING_MAX_GENERATION_SECONDS ends with the
    timeout error and the server sees the disconnect; a non-streamed call whose client goes away is cancelled
    upstream at once, not left generating."""
    import asyncio

    from deployments import gateway

    port, log = upstream
    alice = make_user("alice")
    deployment = _stand_in(alice, port, "limits")
    settings.SERVING_MAX_GENERATION_SECONDS = 1.5

    async def stream() -> tuple[list[bytes], float]:
        started = time.perf_counter()
        raw = json.dumps(
            {
                "model": deployment.code,
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                "max_tokens": 100,
            }
        ).encode()
        reply = await gateway.handle("POST", raw, "limit-1", user=alice)
        return [part async for part in reply.body], time.perf_counter() - started

    def disconnects() -> int:
        return len([e for e in _events(log) if e["event"] == "disconnect"])

    before = disconnects()
    events, took = run_async(stream)
    assert events[-1] == b"data: [DONE]\n\n" and b'"generation_timeout"' in events[-2]
    assert 1.4 < took < 5 and 8 <= len(events) - 2 <= 14  # about 1.5 s of tokens, then stopped
    wait_for(lambda: disconnects() > before, timeout=10, what="the upstream to see it")

    settings.SERVING_MAX_GENERATION_SECONDS = 300
    sent: list[dict] = []

    async def leave_early() -> float:
        raw = json.dumps(
            {"model": deployment.code, "messages": [{"role": "user", "content": "bye"}], "max_tokens": 150}
        ).encode()  # 18 s of generation, not streamed
        started = time.perf_counter()

        async def receive():
            await asyncio.sleep(1.0)
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await gateway.answer(gateway.handle("POST", raw, "limit-2", user=alice), receive, send)
        return time.perf_counter() - started

    before = disconnects()
    assert run_async(leave_early) < 3 and sent == []
    wait_for(lambda: disconnects() > before, timeout=10, what="the upstream to see the non-streamed call cancelled")
    assert not any(e["event"] == "finished" and e.get("sent") == 150 for e in _events(log))


def _login(page, url: str, username: str) -> None:
    page.goto(f"{url}/console/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-pass-123")
    page.click("button.primary")
    page.wait_for_url("**/console/")


def _answer(page, index: int = 0, turn: int = -1) -> str:
    texts = page.locator(f"[data-testid=pane][data-index='{index}'] .pg-msg.assistant .text").all_inner_texts()
    return texts[turn] if texts else ""


@pytest.mark.browser
def test_streams_token_by_token_keeps_history_and_stop_cancels_upstream(
    stack,
    upstream,
    page,
    screenshot_dir,
):
    port, log = upstream
    alice = make_user("alice")
    deployment = _stand_in(alice, port, "solo")
    _login(page, stack.url, "alice")
    page.goto(f"{stack.url}/console/playground/?model={deployment.code}")
    assert page.locator("[data-testid=pane]").count() == 1
    page.fill("[data-testid=max-tokens]", "12")
    page.fill("[data-testid=message]", "Hello there")
    page.click("[data-testid=send]")
    seen = []
    deadline = time.monotonic() + 20
    while "tok11" not in (seen[-1] if seen else "") and time.monotonic() < deadline:
        text = _answer(page)
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        time.sleep(0.03)
    # The answer grew in the page a token at a time while the server was still producing it.
    assert len(seen) >= 6, seen
    assert seen[0].strip() in ("tok0", "tok0 tok1") and seen[-1].strip().endswith("tok11")
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:], strict=False))
    page.wait_for_selector("[data-testid=pane][data-state=done]")
    stats = page.inner_text("[data-testid=stats]")
    assert "first token" in stats and "tokens/s" in stats and "7 prompt / 12 completion tokens" in stats
    snippet = page.inner_text("[data-testid=snippet]")
    assert "from zhipuai import ZhipuAI" in snippet and f'model="{deployment.code}"' in snippet
    assert '"content": "Hello there"' in snippet and "max_tokens=12" in snippet

    # Second turn, long: Stop after a few tokens. The upstream request is cancelled, not left generating.
    page.fill("[data-testid=max-tokens]", "150")
    page.fill("[data-testid=message]", "Tell me more")
    page.click("[data-testid=send]")
    page.wait_for_function(
        "() => (document.querySelectorAll('[data-testid=pane] .pg-msg.assistant .text')[1] || {}).textContent"
        "?.includes('tok3')"
    )
    page.click("[data-testid=stop]")
    page.wait_for_selector("[data-testid=pane][data-state=stopped]")
    stopped = page.locator("[data-testid=stats]").inner_text()
    assert "stopped" in stopped and "?" not in stopped  # no usage came: no made-up prompt count
    page.screenshot(path=str(screenshot_dir / "playground-stopped.png"), full_page=True)
    starts = [e for e in _events(log) if e["event"] == "start"]
    assert [s["messages"] for s in starts[-2:]] == [1, 3]  # the history went with the second turn

    def cancelled() -> dict | None:  # this request's disconnect (the log is the module's)
        return next((e for e in _events(log) if e["event"] == "disconnect" and e["id"] == starts[-1]["id"]), None)

    wait_for(lambda: cancelled() is not None, timeout=10, what="upstream cancelled")
    assert cancelled()["sent"] < 20
    time.sleep(1)
    assert not any(e["event"] == "finished" and e["id"] == starts[-1]["id"] for e in _events(log))
    assert "tok149" not in _answer(page)
    # Both calls are in alice's usage, the stopped one as the client closing it.
    wait_for(lambda: ApiCall.objects.filter(user=alice).count() == 2, timeout=10, what="both calls recorded")
    assert sorted(ApiCall.objects.filter(user=alice).values_list("status_code", flat=True)) == [200, 499]
    assert ApiCall.objects.get(user=alice, status_code=200).completion_tokens == 12


@pytest.mark.browser
def test_side_by_side_streams_both_at_once(stack, upstream, page, screenshot_dir):
    port, _log = upstream
    alice = make_user("alice")
    left, right = _stand_in(alice, port, "left"), _stand_in(alice, port, "right")
    _login(page, stack.url, "alice")
    page.goto(f"{stack.url}/console/playground/?model={left.code}&compare={right.code}")
    assert page.locator("[data-testid=pane]").count() == 2
    page.fill("[data-testid=max-tokens]", "20")
    page.fill("[data-testid=message]", "Same question to both")
    page.click("[data-testid=send]")
    both_partial = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not both_partial:
        a, b = _answer(page, 0), _answer(page, 1)
        both_partial = "tok2" in a and "tok2" in b and "tok19" not in a and "tok19" not in b
        time.sleep(0.03)
    assert both_partial, "both answers were never streaming at the same moment"
    page.wait_for_selector("[data-testid=pane][data-index='0'][data-state=done]")
    page.wait_for_selector("[data-testid=pane][data-index='1'][data-state=done]")
    page.screenshot(path=str(screenshot_dir / "playground-side-by-side.png"), full_page=True)
    for index in (0, 1):
        stats = page.inner_text(f"[data-testid=pane][data-index='{index}'] [data-testid=stats]")
        assert "first token" in stats and "tokens/s" in stats and "20 completion tokens" in stats
    wait_for(lambda: ApiCall.objects.filter(user=alice).count() == 2, timeout=10, what="both calls recorded")
    assert set(ApiCall.objects.filter(user=alice).values_list("model", flat=True)) == {left.code, right.code}
    page.goto(f"{stack.url}/console/usage/")  # both calls are on alice's usage page
    assert page.inner_text("[data-testid=total-calls]").strip() == "2"
    assert left.code in page.inner_text("[data-testid=usage-rows]")
    page.screenshot(path=str(screenshot_dir / "usage.png"), full_page=True)

    # The endpoint the page calls (the ASGI fast path under uvicorn): the session's user, and a CSRF token.
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    endpoint = f"{stack.url}/console/playground/chat/"
    body = {"model": left.code, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
    assert httpx.post(endpoint, json=body, cookies=cookies).status_code == 403  # no CSRF token
    headers = {"X-CSRFToken": cookies["csrftoken"]}
    answer = httpx.post(endpoint, json=body, cookies=cookies, headers=headers)
    assert answer.status_code == 200 and " tok1" in answer.text and answer.text.endswith("data: [DONE]\n\n")
    anonymous = {"csrftoken": cookies["csrftoken"]}
    assert httpx.post(endpoint, json=body, cookies=anonymous, headers=headers).status_code == 401
    bob = Client()
    bob.force_login(make_user("bob"))
    bob_cookies = {"sessionid": bob.cookies["sessionid"].value, "csrftoken": cookies["csrftoken"]}
    refused = httpx.post(endpoint, json=body, cookies=bob_cookies, headers=headers)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"


def test_evaluation_of_a_task_answers_with_base_and_fine_tune_through_the_pool(
    stack,
    tiny_base,
    tiny_lora_dir,  # noqa: F811 (the fixture imported above)
):
    alice, bob = make_user("alice"), make_user("bob")
    if stack.agent is None or stack.agent.poll() is not None:
        stack.start_agent()
    pool = serving.pool_deployment(tiny_base)
    serving.deployment_scale(deployment=pool, instances=1)
    try:
        wait_for(
            lambda: Instance.objects.filter(deployment=pool, state="ready").exists(),
            timeout=180,
            what="a ready pool instance",
        )
        job = FineTuningJob.objects.create(
            owner=alice,
            base_model=tiny_base,
            training_dataset=make_dataset(alice, chat_lines(20)),
            validation_dataset=make_dataset(alice, chat_lines(3), name="val"),
            fine_tuned_model="tiny-test:alice:ev1",
            status="succeeded",
            trained_tokens=1000,
            finished_at=timezone.now(),
        )
        card = FineTunedModel.objects.create(
            code=job.fine_tuned_model,
            owner=alice,
            base_model=tiny_base,
            method="sft",
            training_type="lora",
            path=str(tiny_lora_dir),
        )
        FineTuningJob.objects.filter(pk=job.pk).update(result=card)
        checkpoint = FineTunedModel.objects.create(
            code=f"{card.code}:ckpt-step-2",
            owner=alice,
            base_model=tiny_base,
            method="sft",
            training_type="lora",
            path=str(tiny_lora_dir),
            checkpoint_of=card,
            epoch=1,
            step=2,
        )
        general = make_dataset(alice, chat_lines(2), name="general")
        job.refresh_from_db()
        # The base model judges: its replies are the tiny model's nonsense, and a judgement whose prompt does not fit
        # its 256-token context is refused by the gateway; either way no score, counted, never a crash.
        evaluation = services.evaluation_start(
            job=job, judge_model=tiny_base.code, rubric="Grade it.", regression="dataset", regression_dataset=general
        )
        wait_for(
            lambda: Evaluation.objects.get(pk=evaluation.pk).is_final,
            timeout=300,
            interval=0.5,
            what="the evaluation to finish",
        )
        evaluation.refresh_from_db()
        assert evaluation.status == "succeeded", evaluation.error
        assert evaluation.total == evaluation.done == 3 + 2 and "validation set" in evaluation.source
        assert [m["code"] for m in evaluation.evaluated] == [tiny_base.code, checkpoint.code, card.code]
        items = list(evaluation.items.prefetch_related("answers"))
        assert [i.reference for i in items[:3]] == ["Widget 0 is red.", "Widget 1 is green.", "Widget 2 is blue."]
        assert [i.kind for i in items] == ["task"] * 3 + ["general"] * 2
        answers = [a for i in items for a in i.answers.all()]
        assert len(answers) == 3 * 3 + 2 * 2 and all(not a.error for a in answers)
        assert any(a.answer for a in answers if a.role == "base")
        assert any(a.answer for a in answers if a.role == "result")
        means = {m["code"]: m for m in evaluation.summary["models"]}
        assert evaluation.tune_f1 == pytest.approx(means[card.code]["f1"])
        assert means[card.code]["f1"] == pytest.approx(sum(a.f1 for a in answers[:9] if a.code == card.code) / 3)
        assert evaluation.summary["best"] in (checkpoint.code, card.code)
        assert evaluation.summary["verdict"]["text"].startswith("Not measurable: ")
        # Through the gateway: every answer and every judgement the gateway let through is a recorded call of
        # alice's, to each model's own code.
        judge_replies = [a.judge_reply for i in items[:3] for a in i.answers.all() if a.answer]
        judge_replies += [r for i in items for r in i.pair_replies]
        refused = [r for r in judge_replies if "has a context of 256 tokens" in r]
        calls = len(answers) + len(judge_replies) - len(refused)
        assert all(
            len(i.pair_replies) == (2 if all(a.answer for a in i.answers.all() if a.role != "checkpoint") else 0)
            for i in items
        )
        recorded = ApiCall.objects.filter(user=alice)
        wait_for(lambda: recorded.count() == calls, timeout=10, what=f"{calls} recorded calls")
        assert set(recorded.values_list("model", flat=True)) == {tiny_base.code, checkpoint.code, card.code}
        means = {m["code"]: m for m in evaluation.summary["models"]}
        assert means[card.code]["unscored"] == sum(
            1 for i in items[:3] for a in i.answers.all() if a.code == card.code and a.answer and a.judge_score is None
        )
        client = Client()
        client.force_login(alice)
        page = client.get(f"/console/models/{card.code}/").content.decode()
        assert 'data-testid="evaluation-table"' in page and "Widget 2 is blue." in page
        assert 'data-testid="evaluation-verdict"' in page and 'data-testid="evaluation-general"' in page
        assert (
            f"<strong>{evaluation.base_f1:.2f}</strong> → fine-tune <strong>{evaluation.tune_f1:.2f}</strong>" in page
        )
        client.force_login(bob)
        assert client.get(f"/console/playground/evaluations/{card.code}/").status_code == 404
    finally:
        for deployment in Deployment.objects.exclude(status="cancelled"):  # the pool too, as test_serving_live
            serving.deployment_cancel(deployment=deployment)
        wait_for(
            lambda: not Instance.objects.exclude(state__in=["stopped", "failed"]).exists(),
            timeout=60,
            what="the pool to stop",
        )
