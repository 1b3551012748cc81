"""Serving benchmarks, through the console on real processes, each against a baseline in the same run.

Run on demand (not part of the test run):

    .venv/bin/python tests/perf/bench_serving.py [--requests 16] [--tokens 32]

It starts its own embedded Redis, a Celery worker, a node agent and the console under uvicorn against a database
under var/bench-serving/, with the real ``smollm2-135m-instruct`` (converted once into var/models/) and a LoRA
adapter of it made here (random, r=8 on q/v), then measures:

1. Deploy -> first answer: ``POST /deployments`` then calls until the first 200, for the base model and for the
   LoRA fine-tune (merged on its first deploy). Baseline: a bare ``transformers serve <folder>`` started by hand,
   start -> first answer. Target: under 15 s.
2. Gateway added latency: the same streamed requests straight to the instance and through the gateway,
   interleaved, at 1 and 8 concurrent streams: median time to first token and total time, and throughput
   (completion tokens/s). Target: under 5 ms added; at least 0.97x the throughput at 8 streams.
3. Public pool: the first call of a fine-tune never called before (merge + load on the pool instance) against a
   warm call, time to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench-serving"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ["SERVING_POOL_INSTANCES"] = "0"

from tests import experience_upstream  # noqa: E402  (the suite's one stand-in model server)

MESSAGES = [{"role": "user", "content": "Write a short poem about kettles."}]
# Sent both ways: the gateway gives a call that names none the platform's defaults (deployments/runtimes.py), a
# bare server its own (vLLM: temperature 1, top_p 1; its top_p < 1 costs a fifth of the tokens/s on a CPU).
SAMPLING = {"temperature": 0.95, "top_p": 0.7}


def wait_answer(url: str, headers: dict, model: str, timeout: float = 300) -> float:
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            r = httpx.post(
                f"{url}/chat/completions",
                headers=headers,
                timeout=60,
                json={"model": model, "messages": MESSAGES, "max_tokens": 4},
            )
            if r.status_code == 200:
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no answer from {model} within {timeout} s")


async def one_stream(client, url: str, headers: dict, model: str, tokens: int) -> tuple[float, float, int]:
    started = time.perf_counter()
    ttft, count = None, 0
    body = {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": tokens,
        "stream": True,
        "seed": 1,
        **SAMPLING,
        "stream_options": {"include_usage": True},
    }  # a bare server sends usage only when asked
    async with client.stream("POST", f"{url}/chat/completions", headers=headers, json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                count = chunk["usage"].get("completion_tokens", count)
            if ttft is None and chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                ttft = time.perf_counter() - started
    total = time.perf_counter() - started
    return (total if ttft is None else ttft), total, count  # no text at all: the whole call was its wait


async def batch(url, headers, model, concurrency, tokens) -> tuple[list, list, float]:
    import httpx

    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*[one_stream(client, url, headers, model, tokens) for _ in range(concurrency)])
        wall = time.perf_counter() - started
    return [r[0] for r in results], [r[1] for r in results], sum(r[2] for r in results) / wall


def latency(direct_url, direct_model, direct_headers, gw_url, gw_model, gw_headers, concurrency, rounds, tokens):
    d_ttft, d_total, g_ttft, g_total, d_tps, g_tps = [], [], [], [], [], []
    for i in range(rounds):
        order = [("d", direct_url, direct_model, direct_headers), ("g", gw_url, gw_model, gw_headers)]
        if i % 2:
            order.reverse()
        for kind, url, model, headers in order:
            ttft, total, tps = asyncio.run(batch(url, headers, model, concurrency, tokens))
            (d_ttft if kind == "d" else g_ttft).extend(ttft)
            (d_total if kind == "d" else g_total).extend(total)
            (d_tps if kind == "d" else g_tps).append(tps)
    med = statistics.median
    return {
        "ttft_direct_ms": med(d_ttft) * 1000,
        "ttft_gateway_ms": med(g_ttft) * 1000,
        "total_direct_ms": med(d_total) * 1000,
        "total_gateway_ms": med(g_total) * 1000,
        "tps_direct": med(d_tps),
        "tps_gateway": med(g_tps),
    }


class Report(dict):
    """The figures, each printed as soon as it is measured (a long run that stops still shows what it had)."""

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        print(f"{key}: {json.dumps(value)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--only-gateway", action="store_true", help="only the stand-in upstream comparison")
    args = parser.parse_args()

    import django

    django.setup()
    from datetime import timedelta

    import httpx
    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    from accounts.models import ApiKey, User
    from deployments import services as serving
    from deployments.models import Deployment, Instance, Node
    from deployments.targets import merged_dir
    from modelcards.models import BaseModel, FineTunedModel
    from modelcards.weights import model_dir
    from tests import services
    from tests.serving_support import Stack, free_port, kill_leftover_instances, start_web

    var = Path(settings.VAR_DIR)
    db = settings.DATABASES["default"]["NAME"]
    for suffix in ("", "-wal", "-shm"):  # every run starts from an empty database
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    base = BaseModel.objects.get(code=args.model)
    folder = model_dir(base)
    user = User.objects.filter(username="bench").first() or User.objects.create_user("bench", password="x")
    key = ApiKey.create_for(user=user, name="bench")[1]
    headers = {"Authorization": f"Bearer {key}"}

    adapter = var / "adapter"
    if not (adapter / "adapter_config.json").exists():
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(folder),
            LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )
        model.save_pretrained(adapter)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(folder / name, adapter / name)
    BaseModel.objects.filter(pk=base.pk).update(public_pool=True)
    for code in ("lora", "pool"):
        shutil.rmtree(Path(settings.MODELS_DIR) / "merged" / f"{args.model}:bench:{code}", ignore_errors=True)

    redis = services.start_embedded_redis()
    worker = services.start_worker(db, queues="default,serving", name="bench")
    # As a finished training task makes them: each LoRA card is merged into its base by the worker at once.
    tune, pool_tune = (
        FineTunedModel.objects.create(
            code=f"{args.model}:bench:{code}",
            owner=user,
            base_model=base,
            method="sft",
            training_type="lora",
            path=str(adapter),
        )
        for code in ("lora", "pool")
    )
    started = time.monotonic()
    while not all((merged_dir(t) / "config.json").exists() for t in (tune, pool_tune)):
        if time.monotonic() - started > 300:
            raise RuntimeError("the worker did not merge the fine-tunes within 300 s")
        time.sleep(0.2)
    print(f"both LoRA cards merged by the worker {time.monotonic() - started:.1f} s after they were created")
    web, url = start_web(db)
    stack = Stack(db, url, web)
    stack.start_agent(slots=2)
    api = stack.api
    report = Report()
    try:
        # 2a. the gateway's own cost, against a stand-in upstream that streams 32 chunks 20 ms apart (no model
        # competing for the two cores): the same requests straight to it and through the gateway.
        fake_port = free_port()
        fake = experience_upstream.start(fake_port, FAKE_TOKENS="32", FAKE_DELAY="0.02")
        wait_answer(f"http://127.0.0.1:{fake_port}/v1", {}, "x", timeout=30)
        far = timezone.now() + timedelta(days=1)
        fake_node = Node.objects.update_or_create(name="stand-in", defaults={"heartbeat_at": far, "slots": 0})[0]
        fake_dep = Deployment.objects.create(
            owner=user, code=f"stand-in-{fake_port}", base_model=base, status="running", ready_instances=1
        )
        Instance.objects.create(
            deployment=fake_dep,
            node=fake_node,
            runtime="transformers",
            state="ready",
            upstream_model="stand-in",
            port=fake_port,
        )
        for concurrency in (1, 8):
            report[f"stand_in_streams_{concurrency}"] = latency(
                f"http://127.0.0.1:{fake_port}/v1",
                "stand-in",
                {},
                api,
                fake_dep.code,
                headers,
                concurrency,
                args.rounds * 3,
                32,
            )
        os.killpg(fake.pid, signal.SIGKILL)
        Deployment.objects.filter(pk=fake_dep.pk).update(status="cancelled")
        if args.only_gateway:
            raise StopIteration
        # 0. baseline: a bare transformers serve, start -> first answer.
        port = free_port()
        started = time.monotonic()
        bare = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("transformers")),
                "serve",
                str(folder),
                "--device",
                "cpu",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_answer(f"http://127.0.0.1:{port}/v1", {}, str(folder))
        report["bare_start_to_answer_s"] = time.monotonic() - started
        os.killpg(bare.pid, signal.SIGKILL)

        # 1. deploy -> first answer, base and LoRA.
        for label, model in (("base", base.code), ("lora", tune.code)):
            started = time.monotonic()
            created = httpx.post(f"{api}/deployments", headers=headers, json={"model": model, "instances": 1}).json()
            wait_answer(api, headers, created["code"])
            report[f"deploy_{label}_to_answer_s"] = time.monotonic() - started
            if label == "base":
                deployment = Deployment.objects.get(public_id=created["id"])
            else:
                httpx.post(f"{api}/deployments/{created['id']}/cancel", headers=headers)

        # 2. gateway added latency at 1 and 8 streams, against the same instance.
        instance = Instance.objects.get(deployment=deployment, state="ready")
        direct = f"http://127.0.0.1:{instance.port}/v1"
        own_key = {"Authorization": f"Bearer {instance.api_key}"}  # nothing reaches an instance without it
        for concurrency in (1, 8):
            rounds = args.rounds if concurrency == 1 else max(2, args.rounds // 3)
            report[f"streams_{concurrency}"] = latency(
                direct,
                instance.upstream_model,
                own_key,
                api,
                deployment.code,
                headers,
                concurrency,
                rounds,
                args.tokens,
            )
        serving.deployment_cancel(deployment=deployment)

        # 3. the public pool: a fine-tune's first call (merge + load) against a warm one.
        pool = serving.pool_deployment(base)
        serving.deployment_scale(deployment=pool, instances=1)
        serving.deployment_reconcile(deployment_id=pool.pk)
        wait_answer(api, headers, base.code)
        cold = asyncio.run(batch(api, headers, pool_tune.code, 1, 4))[0][0]
        warm = statistics.median(asyncio.run(batch(api, headers, pool_tune.code, 1, 4))[0][0] for _ in range(5))
        report["pool_cold_ttft_s"], report["pool_warm_ttft_s"] = cold, warm
    except StopIteration:
        pass
    finally:
        stack.stop_agent()
        services.stop(web)
        services.stop(worker)
        kill_leftover_instances()
        services.stop(redis)

    print(json.dumps(report, indent=2))
    for c in (1, 8):
        r = report[f"stand_in_streams_{c}"]
        print(
            f"stand-in upstream, {c} stream(s): added TTFT {r['ttft_gateway_ms'] - r['ttft_direct_ms']:.2f} ms, "
            f"added total {r['total_gateway_ms'] - r['total_direct_ms']:.2f} ms; throughput "
            f"{r['tps_gateway'] / r['tps_direct']:.3f}x direct"
        )
    if args.only_gateway:
        return 0
    print(
        f"\ndeploy -> first answer: base {report['deploy_base_to_answer_s']:.1f} s, LoRA "
        f"{report['deploy_lora_to_answer_s']:.1f} s (target < 15 s); a bare transformers serve: "
        f"{report['bare_start_to_answer_s']:.1f} s "
        f"(base {report['deploy_base_to_answer_s'] / report['bare_start_to_answer_s']:.2f}x)"
    )
    for c in (1, 8):
        r = report[f"streams_{c}"]
        print(
            f"{c} stream(s): TTFT direct {r['ttft_direct_ms']:.1f} ms, gateway {r['ttft_gateway_ms']:.1f} ms "
            f"(+{r['ttft_gateway_ms'] - r['ttft_direct_ms']:.1f} ms); total direct {r['total_direct_ms']:.1f} ms, "
            f"gateway {r['total_gateway_ms']:.1f} ms (+{r['total_gateway_ms'] - r['total_direct_ms']:.1f} ms); "
            f"throughput {r['tps_gateway']:.1f} vs {r['tps_direct']:.1f} tokens/s "
            f"({r['tps_gateway'] / r['tps_direct']:.3f}x)"
        )
    print(
        f"public pool TTFT: first call {report['pool_cold_ttft_s']:.2f} s, warm {report['pool_warm_ttft_s']:.3f} s "
        f"({report['pool_cold_ttft_s'] / report['pool_warm_ttft_s']:.0f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
