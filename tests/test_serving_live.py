"""Serving end to end on real processes: uvicorn (ASGI) in front, a node agent starting real ``transformers serve``
instances of the tiny model, the Celery worker reconciling. Deploy, chat through the openai and zhipuai SDKs,
scale during a stream, kill -9 an instance, kill the node agent, cancel, a model that fails to load, the public
pool, and a second user who can do nothing with the first user's deployment."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from console.models import ApiKey
from deployments import services
from deployments.models import ApiCall, Deployment, Instance, InstanceState
from modelcards.models import FineTunedModel

from .conftest import make_user
from .jobs_support import wait_for
from .serving_support import instance_pids, serving_stack, tiny_lora_dir  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.worker, pytest.mark.timeout(600)]

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def stack(serving_stack, transactional_db):
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
    wait_for(lambda: not Instance.objects.exclude(state__in=["stopped", "failed"]).exists(), timeout=60,
             what="every instance to stop")


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
    return httpx.post(f"{stack.api}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": MESSAGES, "max_tokens": 8, **extra}, timeout=60)


def _stream_events(stack, key: str, model: str, max_tokens: int = 8) -> list[bytes]:
    with httpx.stream("POST", f"{stack.api}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "stream": True},
                      timeout=120) as response:
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

    # openai SDK: not streamed, then streamed.
    client = OpenAI(api_key=key, base_url=stack.api, max_retries=0)
    answer = client.chat.completions.create(model=deployment.code, messages=MESSAGES, max_tokens=5)
    assert answer.model == deployment.code and answer.choices[0].message.role == "assistant"
    assert answer.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=deployment.code, messages=MESSAGES, max_tokens=5,
                                                 stream=True))
    assert chunks and all(c.model == deployment.code for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    # zhipuai SDK: request_id and do_sample are the platform's own fields, handled by the gateway.
    sdk = ZhipuAI(api_key=key, base_url=stack.api, max_retries=0)
    reply = sdk.chat.completions.create(model=deployment.code, messages=MESSAGES, max_tokens=5,
                                        request_id="req-123", do_sample=False)
    assert reply.model == deployment.code and reply.request_id == "req-123"
    streamed = list(sdk.chat.completions.create(model=deployment.code, messages=MESSAGES, max_tokens=5,
                                                stream=True))
    assert streamed and streamed[-1].usage is not None

    raw = _stream_events(stack, key, deployment.code)
    assert raw[-1] == "data: [DONE]"
    last = json.loads(raw[-2][len("data: "):])
    assert last["model"] == deployment.code and last["usage"]["prompt_tokens"] > 0 and last["request_id"]

    wait_for(lambda: ApiCall.objects.filter(user=alice, model=deployment.code).count() >= 5, timeout=10,
             what="the calls to be recorded")
    call = ApiCall.objects.filter(user=alice, model=deployment.code, stream=True).first()
    assert call.status_code == 200 and call.completion_tokens > 0 and call.ttft_ms is not None
    assert call.latency_ms >= call.ttft_ms and call.instance_id == instance.pk

    # The base model's own code needs no deployment for the pool, but with no pool instance it is a clear 503.
    response = _chat(stack, key, tiny_base.code)
    assert response.status_code == 503 and "public pool" in response.json()["error"]["message"]

    # bob can neither call nor see alice's deployment.
    bob = make_user("bob")
    bob_key = _key(bob)
    response = _chat(stack, bob_key, deployment.code)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    response = httpx.get(f"{stack.api}/deployments/{deployment.public_id}",
                         headers={"Authorization": f"Bearer {bob_key}"})
    assert response.status_code == 404

    # Cancel: the code answers 404 at once, and no process is left.
    services.deployment_cancel(deployment=deployment)
    response = _chat(stack, key, deployment.code)
    assert response.status_code == 404 and "cancelled" in response.json()["error"]["message"]
    wait_for(lambda: not instance_pids(stack.db_name), timeout=30, what="the instance process to stop")
    instance.refresh_from_db()
    assert instance.state == InstanceState.STOPPED
