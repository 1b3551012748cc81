# ruff: noqa: E402  (Django is set up before the console's imports)
"""vLLM's LoRA cost by ``--max-lora-rank``, straight to a bare vLLM server (no console), all in one run.

Run on demand (needs .venv-vllm):

    .venv/bin/python tests/perf/bench_lora_rank.py [--configs 16:21:vllm,16:21:console] [--adapters 20] [--calls 3]

For each RANK:SLOTS[:OPS] it starts vLLM on the default model with ``--enable-lora --max-lora-rank RANK --max-loras
SLOTS``, loads N random rank-8 q/v adapters at run time and measures 8 clients calling, round-robin, the base
alone, one adapter, and all N (greedy, 32 tokens a call, 2 rounds, medians), printing each ratio to the base.
OPS ``console`` (the default) serves with the console's vLLM plugin (deployments/vllm_plugin: grouped LoRA ops
and a C kernel on a CPU), as the console's instances do; ``vllm`` with vLLM's own LoRA ops. More fields,
``NAME=VALUE``, are set in that server's environment (``16:21:console:VLLM_ENABLE_V1_MULTIPROCESSING=0``).
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench-lora"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
import django

django.setup()
import httpx
from django.core.management import call_command

call_command("migrate", verbosity=0)
from modelcards.models import BaseModel
from modelcards.weights import model_dir

p = argparse.ArgumentParser()
p.add_argument("--configs", default="16:21:vllm,16:21:console")
p.add_argument("--adapters", type=int, default=20)
p.add_argument("--tokens", type=int, default=32)
p.add_argument("--calls", type=int, default=6)
p.add_argument("--rank", type=int, default=8)
p.add_argument("--dtype", default="")
p.add_argument("--extra", default="")
a = p.parse_args()
folder = model_dir(BaseModel.objects.get(code="smollm2-135m-instruct"))
adir = Path(os.environ["CONSOLE_VAR_DIR"]) / "adapters"
paths = []
model = None
for n in range(a.adapters):
    path = adir / f"r{a.rank}-a{n}"
    if not (path / "adapter_config.json").exists():
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = model or AutoModelForCausalLM.from_pretrained(folder)
        torch.manual_seed(100 + n)
        pm = get_peft_model(
            model, LoraConfig(r=a.rank, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        )
        pm.save_pretrained(str(path))
        model = pm.unload()  # type: ignore[assignment]
    paths.append(path)
MSG = [{"role": "user", "content": "Write a short poem about kettles."}]


async def call(c, url, model):
    r = await c.post(
        f"{url}/v1/chat/completions", json={"model": model, "messages": MSG, "max_tokens": a.tokens, "temperature": 0}
    )
    assert r.status_code == 200, r.text
    return r.json()["usage"]["completion_tokens"]


def rr(url, models, clients=8):
    async def loop(c, start):
        t = 0
        for i in range(a.calls):
            t += await call(c, url, models[(start + i) % len(models)])
        return t

    async def run():
        async with httpx.AsyncClient(timeout=600) as c:
            s = time.perf_counter()
            toks = await asyncio.gather(*[loop(c, k * 3) for k in range(clients)])
            return sum(toks) / (time.perf_counter() - s)

    return asyncio.run(run())


py = os.environ.get("VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
from machine import report as machine_report  # noqa: E402

print(machine_report())
PLUGIN = str(ROOT / "deployments" / "vllm_plugin")
for cfg in a.configs.split(","):
    rank, slots, *rest = cfg.split(":")
    ops = rest[0] if rest else "console"
    extra_env = dict(assignment.split("=", 1) for assignment in rest[1:])
    port = 18555
    env = dict(
        os.environ,
        PYTHONPATH=PLUGIN if ops == "console" else "",
        CONSOLE_VLLM_GROUPED_LORA="1" if ops == "console" else "0",
        OMP_NUM_THREADS="1",
        VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
        VLLM_CPU_OMP_THREADS_BIND="nobind",
        VLLM_CPU_KVCACHE_SPACE="2",
    )
    env.update(extra_env)
    cmd = [
        py,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(folder),
        "--served-model-name",
        "base",
        "--enable-lora",
        "--max-lora-rank",
        rank,
        "--max-loras",
        slots,
        "--max-cpu-loras",
        slots,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "8192",
    ]
    if a.dtype:
        cmd += ["--dtype", a.dtype]
    if a.extra:
        cmd += a.extra.split()
    log = open(adir.parent / f"vllm-{cfg.replace(':', '-').replace('=', '')}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except Exception:
            pass
        if proc.poll() is not None:
            print("died", open(log.name).read()[-3000:])
            sys.exit(1)
        time.sleep(1)
    print(f"cfg {cfg} healthy in {time.time() - t0:.0f}s", flush=True)
    names = []
    for n, path in enumerate(paths):
        r = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": f"a{n}", "lora_path": str(path)}, timeout=60)
        assert r.status_code == 200, r.text
        names.append(f"a{n}")
    rr(url, ["base"], 2)  # warm
    rr(url, names[:2], 2)
    res: dict[str, list[float]] = {}
    for _round in range(2):
        res.setdefault("base", []).append(rr(url, ["base"]))
        res.setdefault("one", []).append(rr(url, names[:1]))
        res.setdefault("all", []).append(rr(url, names))
    med = {k: statistics.median(v) for k, v in res.items()}
    one, every = med["one"] / med["base"], med["all"] / med["base"]
    print(f"cfg {cfg}: base {med['base']:.1f} tokens/s", flush=True)
    print(f"  one adapter {med['one']:.1f} ({one:.2f}x), {len(names)} adapters {med['all']:.1f} ({every:.2f}x)")
    print(f"  raw {res}", flush=True)
    os.killpg(proc.pid, 15)
    proc.wait()
