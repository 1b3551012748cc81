"""The public pool on vLLM against ``transformers serve``, all in one run, on the default model.

Run on demand (not part of the test run; it needs .venv-vllm, which ``./run test`` makes):

    .venv/bin/python tests/perf/bench_serving_pool.py [--tokens 32] [--adapters 20]

It starts its own embedded Redis, a Celery worker, the console under uvicorn and a node agent with
``--runtime vllm`` against a database under var/bench-pool/, with the real ``smollm2-135m-instruct`` (converted
once into var/models/) and N LoRA adapters of it made here (random, one seed each, shaped as the console trains them:
``TrainingConfig``'s rank 16 on every linear layer), then measures:

0. Baseline: a bare ``transformers serve <folder>`` (one process, one thread a request, no key): start -> first
   answer, and completion tokens/s at 1, 8 and 32 concurrent streams with the median time to first token.
1. The pool's vLLM instance: scale the idle pool to 1 -> first answer through the gateway (target <= 45 s);
   tokens/s at 1, 8 and 32 streams through the gateway, and the ratio to transformers serve (target >= 4x at 8
   streams; median time to first token at 8 streams <= 1 s).
2. Gateway overhead on vLLM: the same streams straight to the instance (with its key) and through the gateway,
   interleaved: time to first token at 1 stream (80 calls of 4 tokens each way, medians; target <= 5 ms added),
   throughput at 8, the median of 12 pairs of rounds (target >= 0.97x).
3. A fine-tune's first call (its adapter loaded into the running instance): time to first token (target <= 3 s).
4. N fine-tunes of the base called round-robin by 8 clients: every answer (greedy) equal to the same adapter's
   answer alone (one that is not: whether it is another model's answer, a call served by the wrong weights, or
   where it parted from its own), the instance never restarted, tokens/s against the same load on the base alone
   (target >= 0.7x); as a control, the base's own answers in that load against its answer alone, and the dtype
   the instance ran in (in bfloat16 on an AMX Xeon, batched, every one of the base's own answers parted from its
   answer alone: the engine's sums, not the adapters' routing).
5. Memory: the pool instance's process group (RSS) with the N adapters loaded; the web process while a 300 MB
   body without a key is refused (target: flat, <= 50 MB above idle).
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
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench-pool"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ["SERVING_POOL_INSTANCES"] = "0"

from bench_serving import MESSAGES, Report, batch, wait_answer  # noqa: E402
from machine import report as machine_report  # noqa: E402
from machine import require_quiet  # noqa: E402

# The gateway's added time to first token at 1 stream: 20 calls each way measured +3.9 to +11.6 ms in four runs on
# one machine where profile_gateway.py's 200 measured +3.1.
TTFT_CALLS = 80
# PEFT's random B (init_lora_weights=False) scaled: answers that are still sentences, each adapter's its own (at
# 0.1, 12 of 20 alike; at 1, no longer sentences).
LORA_B_SCALE = 0.3
GATEWAY_PAIRS = 12  # pairs of 8-stream rounds, one straight to the instance and one through the gateway


def group_rss_mb(pgid: int) -> float:
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total / 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def throughput(url, headers, model, concurrency, tokens, rounds=2) -> dict:
    ttfts, rates = [], []
    for _ in range(rounds):
        ttft, _total, rate = asyncio.run(batch(url, headers, model, concurrency, tokens))
        ttfts.extend(ttft)
        rates.append(rate)
    return {"tokens_per_s": statistics.median(rates), "ttft_median_s": statistics.median(ttfts)}


async def greedy(client, url, headers, model, tokens) -> tuple[str, int]:
    body = {"model": model, "messages": MESSAGES, "max_tokens": tokens, "do_sample": False, "temperature": 0}
    r = await client.post(f"{url}/chat/completions", headers=headers, json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    return data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"]


def round_robin(url, headers, models, clients, calls_each, tokens) -> tuple[list, float]:
    import httpx

    async def client_loop(client, start):
        out = []
        for i in range(calls_each):
            model = models[(start + i) % len(models)]
            out.append((model, *(await greedy(client, url, headers, model, tokens))))
        return out

    async def run():
        async with httpx.AsyncClient(timeout=600) as client:
            started = time.perf_counter()
            results = await asyncio.gather(*[client_loop(client, c * 3) for c in range(clients)])
            return [r for rs in results for r in rs], time.perf_counter() - started

    results, wall = asyncio.run(run())
    return results, sum(r[2] for r in results) / wall


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=20)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--busy", action="store_true", help="measure even though the machine is busy")
    args = parser.parse_args()
    require_quiet(args.busy)
    vllm_python = os.environ.get("VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not Path(vllm_python).exists():
        print("vLLM is not installed: ./run test (or ./run up) makes .venv-vllm", file=sys.stderr)
        return 2

    import django

    django.setup()
    import httpx
    from django.conf import settings
    from django.core.management import call_command

    from accounts.models import ApiKey, User
    from deployments import services as serving
    from deployments.agent import instance_log
    from deployments.models import Instance
    from modelcards.models import BaseModel, FineTunedModel
    from modelcards.weights import model_dir
    from tests import services
    from tests.serving_support import _env, free_port, kill_leftover_instances, start_web

    machine = machine_report()  # as it was before the run (the summary repeats it, not the load the run made)
    print(machine)
    var = Path(settings.VAR_DIR)
    db = settings.DATABASES["default"]["NAME"]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    base = BaseModel.objects.get(code=args.model)
    BaseModel.objects.filter(pk=base.pk).update(public_pool=True)
    folder = model_dir(base)
    user = User.objects.filter(username="bench").first() or User.objects.create_user("bench", password="x")
    headers = {"Authorization": f"Bearer {ApiKey.create_for(user=user, name='bench')[1]}"}

    redis = services.start_embedded_redis()  # before the cards: each one's creation queues a task
    adapters = []
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from jobs.training.config import TrainingConfig

    trained = TrainingConfig()  # adapters shaped as the console trains them: its rank, alpha and layers
    model = None
    for n in range(args.adapters + 1):
        path = var / "adapters" / f"r{trained.lora_r}-{trained.lora_target}-b{LORA_B_SCALE}-a{n}"  # made once
        if not (path / "adapter_config.json").exists():
            model = model or AutoModelForCausalLM.from_pretrained(folder)
            torch.manual_seed(100 + n)
            config = LoraConfig(
                r=trained.lora_r,
                lora_alpha=trained.lora_alpha,
                target_modules=trained.lora_target,
                init_lora_weights=False,
            )
            peft_model = get_peft_model(model, config)
            with torch.no_grad():
                for name, weight in peft_model.named_parameters():
                    if "lora_B" in name:
                        weight.mul_(LORA_B_SCALE)
            peft_model.save_pretrained(path)
            model = peft_model.unload()
            for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
                shutil.copy(folder / name, path / name)
        adapters.append(path)
    tunes = [
        FineTunedModel.objects.create(
            code=f"{args.model}:bench:a{n}",
            owner=user,
            base_model=base,
            method="sft",
            training_type="lora",
            path=str(path),
        )
        for n, path in enumerate(adapters)
    ]
    fresh, tunes = tunes[-1], tunes[:-1]  # one never called before phase 3

    report = Report()
    worker = services.start_worker(db, queues="default,serving", name="bench")
    pool_env = {
        "SERVING_POOL_ADAPTERS": str(args.adapters + 1),
        "VLLM_PYTHON": vllm_python,
        # the load of this run is one user's: no per-user or per-key limits
        "SERVING_CONCURRENT_PER_USER": "0",
        "SERVING_REQUESTS_PER_MINUTE": "0",
    }
    web, url = start_web(db, pool_env)
    api = f"{url}/api/paas/v4"
    agent_log = open(var / "agent.log", "ab")  # noqa: SIM115
    agent = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve_node",
            "--name",
            "bench-vllm",
            "--slots",
            "1",
            "--threads",
            str(os.cpu_count() or 1),
            "--runtime",
            "vllm",
        ],
        cwd=ROOT,
        env=_env(db, {**pool_env, "SERVING_START_TIMEOUT": "600"}),
        stdout=agent_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    bare = None
    try:
        # 0. the baseline: a bare transformers serve on all cores.
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
            env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count() or 1)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        bare_url = f"http://127.0.0.1:{port}/v1"
        wait_answer(bare_url, {}, str(folder))
        report["transformers_start_to_answer_s"] = time.monotonic() - started
        for c in (1, 8, 32):
            report[f"transformers_streams_{c}"] = throughput(
                bare_url, {}, str(folder), c, args.tokens, rounds=1 if c == 32 else 2
            )
        os.killpg(bare.pid, signal.SIGKILL)
        bare = None

        # 1. the pool on vLLM: idle -> 1 instance -> first answer, then the same streams through the gateway.
        pool = serving.pool_deployment(base)
        started = time.monotonic()
        serving.deployment_scale(deployment=pool, instances=1)
        serving.deployment_reconcile(deployment_id=pool.pk)
        wait_answer(api, headers, base.code, timeout=600)
        report["vllm_pool_start_to_answer_s"] = time.monotonic() - started
        instance = Instance.objects.get(deployment=pool, state="ready")
        assert instance.runtime == "vllm", instance.runtime
        for c in (1, 8, 32):
            report[f"vllm_streams_{c}"] = throughput(
                api, headers, base.code, c, args.tokens, rounds=1 if c == 32 else 2
            )

        # 2. gateway overhead, interleaved, against the same vLLM instance.
        direct = f"http://127.0.0.1:{instance.port}/v1"
        own = {"Authorization": f"Bearer {instance.api_key}"}
        d1, g1, d8, g8 = [], [], [], []
        for i in range(TTFT_CALLS):  # time to first token only: short calls, many (one's varies by +-40 ms)
            legs = [(direct, own, base.code, d1), (api, headers, base.code, g1)]
            for target, hdrs, name, out in legs if i % 2 == 0 else legs[::-1]:
                out.extend(asyncio.run(batch(target, hdrs, name, 1, 4))[0])
        # Throughput at 8: pairs of rounds, each pair the same work both ways back to back (the order alternating);
        # the ratio is the pairs' median (one round's rate moves by +-5% here, more than the gateway's cost).
        for i in range(GATEWAY_PAIRS):
            legs = [(direct, own, base.code, d8), (api, headers, base.code, g8)]
            for target, hdrs, name, out in legs if i % 2 == 0 else legs[::-1]:
                out.append(asyncio.run(batch(target, hdrs, name, 8, args.tokens))[2])
        report["gateway_overhead"] = {
            "ttft_direct_ms": statistics.median(d1) * 1000,
            "ttft_gateway_ms": statistics.median(g1) * 1000,
            "tps8_direct": statistics.median(d8),
            "tps8_gateway": statistics.median(g8),
            "tps8_ratio": statistics.median(g / d for g, d in zip(g8, d8, strict=True)),
        }

        # 3. a fine-tune's first call: its adapter loaded into the running instance.
        ttft = asyncio.run(batch(api, headers, fresh.code, 1, 4))[0][0]
        warm = statistics.median(asyncio.run(batch(api, headers, fresh.code, 1, 4))[0][0] for _ in range(3))
        report["first_call_ttft_s"], report["warm_call_ttft_s"] = ttft, warm

        # 4. N fine-tunes round-robin by 8 clients: each its own answer; against the base alone, same load.
        import httpx as _httpx

        codes = [t.code for t in tunes]

        async def solo_answers():
            async with _httpx.AsyncClient(timeout=600) as client:
                return {m: (await greedy(client, api, headers, m, args.tokens))[0] for m in [base.code, *codes]}

        solo = asyncio.run(solo_answers())
        report["distinct_answers"] = len({solo[c] for c in codes})
        pid_before = Instance.objects.get(pk=instance.pk).pid
        calls_each = max(3, len(tunes) // 2)
        mixed, mixed_tps = round_robin(api, headers, codes, 8, calls_each, args.tokens)
        same = sum(1 for model, text, _n in mixed if text == solo[model])
        # An answer that differs from its adapter's alone: another model's answer (the base's or another adapter's)
        # would be a call served by the wrong weights; else where it parts from its own answer (batched float sums
        # round differently from a call alone, and greedy decoding follows a near tie either way).
        differing = [(model, text) for model, text, _n in mixed if text != solo[model]]
        misrouted = sum(1 for model, text in differing if text in {v for k, v in solo.items() if k != model})
        parted = [len(os.path.commonprefix([text, solo[model]])) for model, text in differing]
        base_results, base_tps = round_robin(api, headers, [base.code], 8, calls_each, args.tokens)
        # The control: the base model's own answers, batched the same way, against its answer alone. Where they
        # part too, batching moves the engine's sums (vLLM's CPU GEMMs take another path for 8 rows than for 1),
        # not the routing of adapters.
        base_same = sum(1 for _model, text, _n in base_results if text == solo[base.code])
        log = instance_log(instance.pk).read_text(errors="replace")
        dtype = next((w.split("=", 1)[1].rstrip(",") for w in log.split() if w.startswith("dtype=")), "?")
        now = Instance.objects.get(pk=instance.pk)
        report["round_robin"] = {
            "adapters": len(tunes),
            "calls": len(mixed),
            "answers_equal_to_solo": same,
            "answers_of_another_model": misrouted,
            "differing_parted_after_chars": parted,
            "answer_length_chars": statistics.median(len(v) for v in solo.values()),
            "tokens_per_s_adapters": mixed_tps,
            "tokens_per_s_base": base_tps,
            "restarted": now.pid != pid_before or now.state != "ready",
            "base_answers_equal_to_solo": base_same,
            "base_calls": len(base_results),
            "dtype": dtype,
        }

        # 5. memory: the instance with every adapter loaded; the web process refusing a 300 MB body.
        report["pool_instance_rss_mb"] = group_rss_mb(instance.pid)
        idle = rss_mb(web.pid)
        peak = idle

        def body():
            for _ in range(300):
                yield b"x" * (1 << 20)

        import threading

        done = threading.Event()

        def watch():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mb(web.pid))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            status = httpx.post(f"{api}/chat/completions", content=body(), timeout=120).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        done.set()
        watcher.join()
        report["web_300mb_body"] = {"status": status, "idle_rss_mb": idle, "peak_rss_mb": peak}
        serving.deployment_cancel(deployment=pool)
    finally:
        if bare is not None:
            os.killpg(bare.pid, signal.SIGKILL)
        for stop in (
            lambda: services.stop(agent, timeout=30),
            lambda: services.stop(web),
            lambda: services.stop(worker),
            kill_leftover_instances,
            lambda: services.stop(redis),
        ):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                print(f"stopping: {exc}", file=sys.stderr)

    print(json.dumps(report, indent=2))
    print(f"\n{machine}; {args.tokens} tokens a call")
    for c in (1, 8, 32):
        v, t = report[f"vllm_streams_{c}"], report[f"transformers_streams_{c}"]
        print(
            f"{c:>2} stream(s): vLLM pool {v['tokens_per_s']:.1f} tokens/s (TTFT median {v['ttft_median_s']:.2f} s), "
            f"transformers serve {t['tokens_per_s']:.1f} ({t['ttft_median_s']:.2f} s): "
            f"{v['tokens_per_s'] / t['tokens_per_s']:.2f}x"
        )
    o = report["gateway_overhead"]
    print(
        f"gateway: {o['ttft_gateway_ms'] - o['ttft_direct_ms']:+.1f} ms to first token at 1 stream "
        f"({o['ttft_gateway_ms']:.1f} vs {o['ttft_direct_ms']:.1f} ms, medians of {TTFT_CALLS}); "
        f"{o['tps8_ratio']:.3f}x direct throughput at 8 streams (median of {GATEWAY_PAIRS} pairs of rounds)"
    )
    print(
        f"start -> first answer: vLLM pool {report['vllm_pool_start_to_answer_s']:.1f} s, "
        f"transformers serve {report['transformers_start_to_answer_s']:.1f} s"
    )
    print(
        f"a fine-tune's first call: {report['first_call_ttft_s']:.2f} s to first token "
        f"(warm {report['warm_call_ttft_s']:.2f} s)"
    )
    r = report["round_robin"]
    print(
        f"{r['adapters']} fine-tunes round-robin, 8 clients: {r['answers_equal_to_solo']}/{r['calls']} answers "
        f"equal to the adapter's own alone (of the others, {r['answers_of_another_model']} another model's; they "
        f"parted from their own after {r['differing_parted_after_chars']} of ~{r['answer_length_chars']:.0f} "
        "characters), "
        f"{report['distinct_answers']} distinct; "
        f"{r['tokens_per_s_adapters']:.1f} tokens/s against {r['tokens_per_s_base']:.1f} on the base alone "
        f"({r['tokens_per_s_adapters'] / r['tokens_per_s_base']:.2f}x); restarted: {r['restarted']}; the base "
        f"batched alike: {r['base_answers_equal_to_solo']}/{r['base_calls']} equal to its own alone ({r['dtype']})"
    )
    w = report["web_300mb_body"]
    print(
        f"memory: pool instance with {r['adapters'] + 1} adapters {report['pool_instance_rss_mb']:.0f} MB; web "
        f"process refusing a 300 MB body ({w['status']}): {w['idle_rss_mb']:.0f} -> {w['peak_rss_mb']:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
