"""System checks of the serving settings (console/settings.py, "Serving"; console/checks.py has the mechanism)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from console.checks import range_errors

RANGES = [
    ("SERVING_NODE_TIMEOUT", 0.001, "seconds without a heartbeat after which a node is gone"),
    ("SERVING_START_TIMEOUT", 0.001, "seconds an instance may take to start"),
    ("SERVING_DRAIN_TIMEOUT", 0, "seconds a surplus instance drains"),
    ("SERVING_STOP_GRACE", 0, "seconds between SIGTERM and SIGKILL"),
    ("SERVING_STALL_SECONDS", 0.001, "seconds without a token after which an instance is stuck"),
    ("SERVING_POOL_INSTANCES", 0, "minimum instances of a new public pool"),
    ("SERVING_POOL_MAX_INSTANCES", 0, "maximum instances of a new public pool"),
    ("SERVING_POOL_SCALE_UP_AT", 0.001, "calls in flight per instance at which a pool grows"),
    ("SERVING_POOL_IDLE_SECONDS", 0.001, "idle seconds after which a pool shrinks"),
    ("SERVING_POOL_MODEL_TIMEOUT", 1, "seconds an idle model stays loaded"),
    ("SERVING_POOL_ADAPTERS", 0, "LoRA adapters a vLLM instance keeps loaded"),
    ("SERVING_MAX_LORA_RANK", 1, "largest LoRA rank a vLLM instance accepts"),
    ("SERVING_MAX_MODEL_LEN", 1, "tokens of context an instance serves at most"),
    ("VLLM_CPU_KVCACHE_SPACE", 0, "GiB of a vLLM CPU instance's KV cache"),
    ("SERVING_STREAM_INTERVAL", 1, "tokens a vLLM instance sends a stream at once"),
    ("SERVING_MAX_BODY_MB", 0.001, "MiB of the largest chat request"),
    ("SERVING_DEFAULT_MAX_TOKENS", 1, "tokens of a call that names no max_tokens"),
    ("SERVING_MAX_GENERATION_SECONDS", 0.001, "seconds one call may generate for"),
    ("SERVING_REQUESTS_PER_MINUTE", 0, "chat calls a minute per key or user (0: no limit)"),
    ("SERVING_CONCURRENT_PER_USER", 0, "chat calls at once per user (0: no limit)"),
]


@register("configuration")
def serving_settings_check(app_configs=None, **kwargs) -> list[Error]:
    from .runtimes import RUNTIMES

    errors = range_errors(RANGES, "deployments")
    known = ["auto", *RUNTIMES]
    if settings.SERVING_RUNTIME not in known:
        errors.append(
            Error(
                f"SERVING_RUNTIME is {settings.SERVING_RUNTIME!r}, not a runtime the node agent knows.",
                hint=f"Set SERVING_RUNTIME to one of: {', '.join(known)} (auto: vLLM where VLLM_PYTHON runs).",
                id="deployments.E101",
            )
        )
    dtypes = ["auto", "float32", "bfloat16", "float16"]
    if settings.SERVING_DTYPE not in dtypes:
        errors.append(
            Error(
                f"SERVING_DTYPE is {settings.SERVING_DTYPE!r}, not a dtype vLLM instances compute in.",
                hint=f"Set SERVING_DTYPE to one of: {', '.join(dtypes)} (auto: float32 on a CPU without fast bf16).",
                id="deployments.E102",
            )
        )
    if settings.SERVING_LORA_OPS not in ("console", "vllm"):
        errors.append(
            Error(
                f"SERVING_LORA_OPS is {settings.SERVING_LORA_OPS!r}, not the LoRA ops of a vLLM CPU instance.",
                hint="Set SERVING_LORA_OPS to console (the console's vLLM plugin, the default) or vllm (vLLM's own).",
                id="deployments.E103",
            )
        )
    return errors
