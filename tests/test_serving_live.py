"""Serving end to end on real processes: uvicorn (ASGI) in front, a node agent starting real ``transformers serve``
instances of the tiny model, the Celery worker reconciling. Deploy, chat through the openai and zhipuai SDKs,
scale during a stream, kill -9 an instance, kill the node agent, cancel, a model that fails to load, the public
pool, and a second user who can do nothing with the first user's deployment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from accounts.models import ApiKey
from deployments import services
from deployments.models import ApiCall, Deployment, Instance, InstanceState
from modelcards.models import FineTunedModel

from .conftest import make_user
from .jobs_support import wait_for
from .serving_support import instance_pids, other_lora_dir, serving_stack, tiny_lora_dir  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.worker, pytest.mark.timeout(600)]

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def stack(serving_stack, transactional_db):  # noqa: F811 (the fixture imported above)
    """The live stack with its node agent running (started again if a test killed it)."""
    if serving_stack.agent is None or serving_stack.agent.poll() is not None:
        serving_stack.start_agent()
    else:  # the agent's node row was flushed with the last test's tables: wait until it registered again
        from deployments.models import Node

        wait_for(lambda: Node.objects.filter(name="test-node").exists(), timeout=30, what="the node to register")
    yield serving_stack
    # Cancel whatever the test left so the agent stops its processes before the tables are flushed.
    for deployment in Deployment.objects.exclude(status="cancelled"):
        services.deployment_cancel(deployment=deployment)
    wait_for(
        lambda: not Instance.objects.exclude(state__in=["stopped", "failed"]).exists(),
        timeout=60,
        what="every instance to stop",
    )


def _key(user) -> str:
    return ApiKey.create_for(user=user, name="serving")[1]


def _wait_running(deployment: Deployment, ready: int | None = None, timeout: float = 120) -> Deployment:
    want = ready or deployment.desired_instances

    def check():
        deployment.refresh_from_db()
        if deployment.status == "failed":
            raise AssertionError(f"deployment failed: {deployment.status_reason}")
        return deployment.status == "running" and deployment.ready_instances == want

    wait_for(check, timeout=timeout, interval=0.3, what=f"{deployment.code} running with {want} ready")
    return deployment


def _chat(stack, key: str, model: str, **extra) -> httpx.Response:
    return httpx.post(
        f"{stack.api}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": MESSAGES, "max_tokens": 8, **extra},
        timeout=60,
    )


def _stream_events(stack, key: str, model: str, max_tokens: int = 8) -> list[str]:
    with httpx.stream(
        "POST",
        f"{stack.api}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "stream": True},
        timeout=120,
    ) as response:
        assert response.status_code == 200, response.read()
        return [line for line in response.iter_lines() if line]


def test_deploy_chat_with_both_sdks_and_usage_recorded(stack, tiny_base):
    from openai import OpenAI
    from zhipuai import ZhipuAI

    alice = make_user("alice")
    key = _key(alice)
    started = time.monotonic()
    deployment = services.deployment_create(user=alice, model=tiny_base, instances=1)
    _wait_running(deployment)
    deploy_seconds = time.monotonic() - started
    instance = deployment.instances.get(state="ready")
    assert instance.port and instance.pid and instance.log_path and instance.node.name == "test-node"
    print(f"deploy -> ready: {deploy_seconds:.1f} s")

    # Nothing reaches transformers serve without the instance's key (deployments/serve_transformers.py), from
    # this process or another OS user, and the key is on no command line; /health stays open for the agent.
    chat = {"model": instance.upstream_model, "messages": MESSAGES, "max_tokens": 2}
    assert httpx.post(f"{instance.base_url}/v1/chat/completions", json=chat, timeout=60).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    direct = f"{instance.base_url}/v1/chat/completions"
    assert httpx.post(direct, json=chat, headers=wrong, timeout=60).status_code == 401
    assert httpx.get(f"{instance.base_url}/health", timeout=10).status_code == 200
    if os.geteuid() == 0 and shutil.which("runuser") and shutil.which("curl"):
        out = subprocess.run(
            [
                "runuser",
                "-u",
                "nobody",
                "--",
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(chat),
                direct,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.strip() == "401", out.stdout + out.stderr
    assert instance.api_key.encode() not in Path(f"/proc/{instance.pid}/cmdline").read_bytes()

    # openai SDK: not streamed, then streamed.
    client = OpenAI(api_key=key, base_url=stack.api, max_retries=0)
    answer = client.chat.completions.create(model=deployment.code, messages=MESSAGES, max_tokens=5)
    assert answer.model == deployment.code and answer.choices[0].message.role == "assistant"
    assert answer.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=deployment.code, messages=MESSAGES, max_tokens=5, stream=True))
    assert chunks and all(c.model == deployment.code for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    # zhipuai SDK: request_id and do_sample are the platform's own fields, handled by the gateway.
    sdk = ZhipuAI(api_key=key, base_url=stack.api, max_retries=0)
    reply = sdk.chat.completions.create(
        model=deployment.code, messages=MESSAGES, max_tokens=5, request_id="req-123", do_sample=False
    )
    assert reply.model == deployment.code and reply.request_id == "req-123"
    streamed = list(sdk.chat.completions.create(model=deployment.code, messages=MESSAGES, max_tokens=5, stream=True))
    assert streamed and streamed[-1].usage is not None

    raw = _stream_events(stack, key, deployment.code)
    assert raw[-1] == "data: [DONE]"
    last = json.loads(raw[-2][len("data: ") :])
    assert last["model"] == deployment.code and last["usage"]["prompt_tokens"] > 0 and last["request_id"]

    wait_for(
        lambda: ApiCall.objects.filter(user=alice, model=deployment.code).count() >= 5,
        timeout=10,
        what="the calls to be recorded",
    )
    call = ApiCall.objects.filter(user=alice, model=deployment.code, stream=True).first()
    assert call.status_code == 200 and call.completion_tokens > 0 and call.ttft_ms is not None
    assert call.latency_ms >= call.ttft_ms and call.instance_id == instance.pk

    # The base model's own code needs no deployment: its public pool (idle at its minimum of 0) starts an
    # instance, and the caller is told so and when to come back, never left to time out.
    before = services.pool_deployment(tiny_base)
    history = list(before.events.values_list("message", flat=True))
    response = _chat(stack, key, tiny_base.code)
    assert response.status_code == 503, (before.desired_instances, before.min_instances, history)
    assert response.json()["error"]["code"] == "model_starting"
    assert "public pool" in response.json()["error"]["message"] and int(response.headers["Retry-After"]) > 0
    pool = services.pool_deployment(tiny_base)
    assert pool.desired_instances == 1 and pool.events.filter(message__contains="A call came").exists()
    services.deployment_cancel(deployment=pool)

    # bob can neither call nor see alice's deployment.
    bob = make_user("bob")
    bob_key = _key(bob)
    response = _chat(stack, bob_key, deployment.code)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    response = httpx.get(
        f"{stack.api}/deployments/{deployment.public_id}", headers={"Authorization": f"Bearer {bob_key}"}
    )
    assert response.status_code == 404

    # Cancel: the code answers 404 at once, and no process is left.
    services.deployment_cancel(deployment=deployment)
    response = _chat(stack, key, deployment.code)
    assert response.status_code == 404 and "cancelled" in response.json()["error"]["message"]
    wait_for(lambda: not instance_pids(stack.db_name), timeout=30, what="the instance process to stop")
    wait_for(
        lambda: Instance.objects.get(pk=instance.pk).state == InstanceState.STOPPED,
        timeout=10,
        what="the instance to be marked stopped",
    )


def _stream_in_thread(stack, key: str, model: str, max_tokens: int, results: list) -> threading.Thread:
    def run():
        try:
            results.append(_stream_events(stack, key, model, max_tokens=max_tokens))
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_scale_during_a_stream_kill_an_instance_then_cancel(stack, tiny_base):
    alice = make_user("alice")
    key = _key(alice)
    deployment = _wait_running(services.deployment_create(user=alice, model=tiny_base, instances=1))

    # Scale 1 -> 2 while a long stream runs: the stream is not cut.
    results: list = []
    thread = _stream_in_thread(stack, key, deployment.code, 400, results)
    services.deployment_scale(deployment=deployment, instances=2)
    _wait_running(deployment, ready=2)
    thread.join(120)
    assert isinstance(results[0], list) and results[0][-1] == "data: [DONE]", results
    assert '"finish_reason"' in results[0][-2] or '"usage"' in results[0][-2]

    # Scale 2 -> 1 while streams run on both instances: the surplus one drains, nothing is cut.
    results = []
    threads = [_stream_in_thread(stack, key, deployment.code, 300, results) for _i in range(2)]
    time.sleep(0.5)  # both streams are in flight, one on each instance (least busy first)
    services.deployment_scale(deployment=deployment, instances=1)
    for thread in threads:
        thread.join(120)
    assert len(results) == 2 and all(isinstance(r, list) and r[-1] == "data: [DONE]" for r in results), results
    _wait_running(deployment, ready=1)
    wait_for(lambda: len(instance_pids(stack.db_name)) == 1, timeout=30, what="the drained instance to stop")
    wait_for(
        lambda: deployment.instances.filter(state="stopped").count() == 1,
        timeout=10,
        what="the drained instance to be marked stopped",
    )

    # Two instances again; kill -9 one: calls keep succeeding, and it is replaced within 30 s.
    services.deployment_scale(deployment=deployment, instances=2)
    _wait_running(deployment, ready=2)
    victim = deployment.instances.filter(state="ready").first()
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    failures = 0
    for _i in range(10):
        if _chat(stack, key, deployment.code).status_code != 200:
            failures += 1
    assert failures == 0
    # the victim may still read "ready" for a moment: wait until two instances other than it are ready
    wait_for(
        lambda: deployment.instances.filter(state="ready").exclude(pk=victim.pk).count() == 2,
        timeout=max(1.0, 30 - (time.monotonic() - killed_at)),
        interval=0.3,
        what="a replacement instance ready",
    )
    _wait_running(deployment, ready=2, timeout=10)
    replaced_in = time.monotonic() - killed_at
    victim.refresh_from_db()
    assert victim.state == "failed" and "exited" in victim.error
    assert _chat(stack, key, deployment.code).status_code == 200
    print(f"kill -9 -> replaced and ready: {replaced_in:.1f} s")

    # Cancel: calls fail at once; no process is left.
    services.deployment_cancel(deployment=deployment)
    assert _chat(stack, key, deployment.code).status_code == 404
    wait_for(lambda: not instance_pids(stack.db_name), timeout=30, what="every instance process to stop")


def test_node_agent_killed_then_restarted_adopts_its_instances(stack, tiny_base):
    alice = make_user("alice")
    key = _key(alice)
    deployment = _wait_running(services.deployment_create(user=alice, model=tiny_base, instances=1))
    instance = deployment.instances.get(state="ready")
    stack.kill_agent()
    assert _chat(stack, key, deployment.code).status_code == 200  # the instance outlives its agent
    stack.start_agent()
    time.sleep(2)
    instance.refresh_from_db()
    assert instance.state == "ready" and instance_pids(stack.db_name) == [instance.pid]  # adopted, not restarted
    assert _chat(stack, key, deployment.code).status_code == 200

    # An agent that comes back after its instance died meanwhile: marked failed and replaced; nothing orphaned.
    stack.kill_agent()
    os.killpg(instance.pid, signal.SIGKILL)
    stack.start_agent()
    # the dead instance may still read "ready" for a moment: wait for its replacement to be the ready one
    wait_for(
        lambda: deployment.instances.filter(state="ready").exclude(pk=instance.pk).exists(),
        timeout=60,
        interval=0.3,
        what="a replacement instance ready",
    )
    _wait_running(deployment, ready=1, timeout=60)
    instance.refresh_from_db()
    assert instance.state == "failed"
    assert len(instance_pids(stack.db_name)) == 1


def test_model_that_fails_to_load_fails_with_the_reason(stack, tiny_base, tmp_path):
    from modelcards.models import BaseModel

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": "not a number"}))
    base = BaseModel.objects.create(
        code="broken-test",
        display_name="Broken",
        family="test",
        modality="text",
        methods=["sft"],
        training_types=["lora"],
        architecture="llama",
        weights_source="local_dir",
        weights_location=str(broken),
    )
    alice = make_user("alice")
    deployment = services.deployment_create(user=alice, model=base, instances=1)
    wait_for(
        lambda: Deployment.objects.get(pk=deployment.pk).status == "failed", timeout=90, what="the deployment to fail"
    )
    deployment.refresh_from_db()
    assert "exited while loading" in deployment.status_reason
    assert "Error" in deployment.status_reason  # the server's own error, from its log
    assert not instance_pids(stack.db_name)
    response = httpx.get(
        f"{stack.api}/deployments/{deployment.public_id}", headers={"Authorization": f"Bearer {_key(alice)}"}
    )
    assert response.json()["status"] == "failed" and response.json()["error"]["message"]


def test_public_pool_serves_a_lora_fine_tune_without_deployment(
    stack,
    tiny_base,
    tiny_lora_dir,  # noqa: F811
    other_lora_dir,  # noqa: F811
):
    alice, bob = make_user("alice"), make_user("bob")
    tune = FineTunedModel.objects.create(
        code="tiny-test:alice:pool1",
        owner=alice,
        base_model=tiny_base,
        method="sft",
        training_type="lora",
        path=str(tiny_lora_dir),
    )
    full = FineTunedModel.objects.create(
        code="tiny-test:alice:full1",
        owner=alice,
        base_model=tiny_base,
        method="sft",
        training_type="full",
        path=str(tiny_lora_dir),
    )
    pool = services.pool_deployment(tiny_base)
    services.deployment_scale(deployment=pool, instances=1)
    _wait_running(pool, ready=1)
    key = _key(alice)

    started = time.monotonic()
    response = _chat(stack, key, tune.code)
    cold = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["model"] == tune.code
    started = time.monotonic()
    assert _chat(stack, key, tune.code).status_code == 200
    warm = time.monotonic() - started
    print(f"pool: first call {cold:.2f} s, warm call {warm:.2f} s")
    events = _stream_events(stack, key, tiny_base.code)  # the base model from the pool too
    assert events[-1] == "data: [DONE]" and json.loads(events[0][6:])["model"] == tiny_base.code

    # A checkpoint's model is called by its code like its result (its own adapter, loaded on the first call);
    # promoted, the result's code answers with the checkpoint's weights.
    checkpoint = FineTunedModel.objects.create(
        code=f"{tune.code}:ckpt-step-3",
        owner=alice,
        base_model=tiny_base,
        method="sft",
        training_type="lora",
        path=str(other_lora_dir),
        checkpoint_of=tune,
        epoch=1,
        step=3,
    )
    greedy = {"temperature": 0.0, "max_tokens": 12}
    response = _chat(stack, key, checkpoint.code, **greedy)
    assert response.status_code == 200 and response.json()["model"] == checkpoint.code, response.text
    answer = response.json()["choices"][0]["message"]["content"]
    assert _chat(stack, _key(bob), checkpoint.code).status_code == 404
    from modelcards.services import fine_tuned_model_promote

    fine_tuned_model_promote(checkpoint=checkpoint)
    wait_for(
        lambda: _chat(stack, key, tune.code, **greedy).json()["choices"][0]["message"]["content"] == answer,
        timeout=30,
        what="the result to answer with the promoted checkpoint's weights",
    )

    # A full fine-tune needs a deployment: 400 that says so and where.
    response = _chat(stack, key, full.code)
    assert response.status_code == 400 and "Deploy it first" in response.json()["error"]["message"]
    assert "/console/deployments/new/?model=" in response.json()["error"]["message"]
    # bob cannot call alice's fine-tune.
    assert _chat(stack, _key(bob), tune.code).status_code == 404

    # Deleting the card: its code can no longer be called.
    from modelcards.services import fine_tuned_model_delete

    fine_tuned_model_delete(model=tune)
    assert _chat(stack, key, tune.code).status_code == 404


@pytest.mark.browser
def test_browser_deploy_watch_scale_cancel(stack, tiny_base, page, screenshot_dir):
    """The page a user watches: create from the form, see it come up without reloading, scale, cancel."""
    make_user("alice")
    page.goto(f"{stack.url}/console/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.click("nav.sidenav >> text=Private instances")
    page.goto(f"{stack.url}/console/deployments/new/?model={tiny_base.code}")
    page.click("button.primary")
    try:
        page.wait_for_selector("text=1 of 1 instance ready", timeout=120_000)  # polled in, no reload
    except Exception:
        page.screenshot(path=str(screenshot_dir / "deployment-timeout.png"), full_page=True)
        raise
    code = page.inner_text("#deployment-code")
    assert Deployment.objects.get(code=code).status == "running"
    assert page.inner_text("[data-testid=status]") == "Running"
    page.screenshot(path=str(screenshot_dir / "deployment-running.png"), full_page=True)
    page.fill("[data-testid=scale-input]", "2")
    page.click("[data-testid=scale]")
    page.wait_for_selector("text=2 of 2 instances ready", timeout=120_000)
    page.click("[data-testid=cancel]")
    page.click("[data-testid=confirm-cancel]")
    page.wait_for_selector("[data-testid=status]:has-text('Cancelled')")
    assert Deployment.objects.get(code=code).status == "cancelled"
