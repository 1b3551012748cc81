"""The serving settings as the deployments app uses them. Each is read from the environment once, with its one
default, in console/settings.py ("Serving"); these functions only name and shape them."""

from __future__ import annotations

from django.conf import settings


def node_timeout() -> float:
    """Seconds without a heartbeat after which a node counts as gone and its instances are replaced."""
    return float(settings.SERVING_NODE_TIMEOUT)


def start_timeout() -> float:
    """Seconds an instance may take from start to a healthy /health before it counts as failed."""
    return float(settings.SERVING_START_TIMEOUT)


def drain_timeout() -> float:
    """Seconds a surplus instance is given to finish in-flight requests before it is stopped."""
    return float(settings.SERVING_DRAIN_TIMEOUT)


def stop_grace() -> float:
    """Seconds between SIGTERM and SIGKILL when stopping an instance."""
    return float(settings.SERVING_STOP_GRACE)


def pool_instances() -> int:
    """The minimum instances of a base model's public pool when it is created (SERVING_POOL_INSTANCES; operators
    change each pool's minimum and maximum in the admin). 0: an idle pool gives its slots back."""
    return int(settings.SERVING_POOL_INSTANCES)


def pool_max_instances() -> int:
    """The maximum instances of a base model's public pool when it is created (SERVING_POOL_MAX_INSTANCES)."""
    return max(1, int(settings.SERVING_POOL_MAX_INSTANCES))


def pool_scale_up_at() -> float:
    """Calls in flight per ready pool instance at which the pool starts one more, up to its maximum
    (SERVING_POOL_SCALE_UP_AT)."""
    return float(settings.SERVING_POOL_SCALE_UP_AT)


def pool_idle_seconds() -> float:
    """Seconds without a call after which a pool above its minimum stops one instance (SERVING_POOL_IDLE_SECONDS)."""
    return float(settings.SERVING_POOL_IDLE_SECONDS)


def pool_model_timeout() -> int:
    """Seconds a ``transformers serve`` pool instance keeps an idle model loaded."""
    return int(settings.SERVING_POOL_MODEL_TIMEOUT)


def pool_adapters() -> int:
    """LoRA fine-tunes a vLLM pool instance keeps loaded (SERVING_POOL_ADAPTERS); the least recently used one is
    unloaded to make room for another."""
    return max(1, int(settings.SERVING_POOL_ADAPTERS))


def max_lora_rank() -> int:
    """The largest LoRA rank a vLLM instance accepts (SERVING_MAX_LORA_RANK; the console trains rank 16)."""
    return int(settings.SERVING_MAX_LORA_RANK)


def vllm_plugin_environment() -> dict[str, str]:
    """What a vLLM instance needs to load the console's plugin (deployments/vllm_plugin: its folder is the
    instance's PYTHONPATH, where the entry point's dist-info is; nothing installed, and nothing of the console's
    own environment on vLLM's path), with its multi-LoRA ops, or with vLLM's own (SERVING_LORA_OPS=vllm; any
    other value is an error of the system check, deployments.E103). The plugin's C kernel is built into
    var/cache/console-vllm."""
    from pathlib import Path

    plugin = str(Path(__file__).resolve().parent / "vllm_plugin")
    cache = Path(settings.VAR_DIR) / "cache" / "console-vllm"
    grouped = "0" if settings.SERVING_LORA_OPS == "vllm" else "1"
    return {"PYTHONPATH": plugin, "CONSOLE_VLLM_GROUPED_LORA": grouped, "CONSOLE_VLLM_CACHE": str(cache)}


def served_context(context_length: int) -> int:
    """The context an instance serves: the model's, at most SERVING_MAX_MODEL_LEN tokens (vLLM reserves KV cache
    for it)."""
    cap = int(settings.SERVING_MAX_MODEL_LEN)
    return min(context_length, cap) if context_length else cap


def vllm_kv_cache_gib() -> int:
    """The KV cache of a vLLM CPU instance in whole GiB (VLLM_CPU_KVCACHE_SPACE)."""
    return max(1, int(settings.VLLM_CPU_KVCACHE_SPACE))


def stream_interval() -> int:
    """Tokens a vLLM instance sends a streamed call at once (SERVING_STREAM_INTERVAL, vLLM's --stream-interval;
    its first token always goes at once)."""
    return max(1, int(settings.SERVING_STREAM_INTERVAL))


def stall_seconds() -> float:
    """Seconds an instance may have calls running without producing a token before it counts as stuck and is
    replaced (SERVING_STALL_SECONDS)."""
    return float(settings.SERVING_STALL_SECONDS)


def vllm_bin() -> str:
    """The ``vllm`` executable of a vLLM node (its own virtualenv)."""
    return str(settings.VLLM_BIN)


def vllm_python() -> str:
    """The Python of the vLLM virtualenv (``./run`` makes .venv-vllm and exports VLLM_PYTHON)."""
    return str(settings.VLLM_PYTHON)


def vllm_dtype() -> str:
    """The dtype vLLM instances compute in (SERVING_DTYPE): ``auto`` leaves it to vLLM (the model's own, bf16 for
    most) on a GPU and on a CPU with AMX, and is ``float32`` on other CPUs: there vllm-cpu 0.32.0's compiled bf16
    model answers nonsense (an AVX2 EPYC, and a Zen 4 EPYC with AVX512-BF16 but no AMX, both answered "What is the
    capital of France?" with "L'Étoile, la Marseillaise, ..." where float32, its bf16 without compilation and
    transformers all answer "The capital of France is Paris."), and float32 compiled was 3x bf16 uncompiled's
    throughput at 8 streams. Any other value is passed as vLLM's ``--dtype``."""
    chosen = str(settings.SERVING_DTYPE or "auto")
    if chosen != "auto":
        return chosen
    from console.cpus import bf16_isa

    return "auto" if has_nvidia_gpu() or bf16_isa() == "AMX" else "float32"


def has_nvidia_gpu() -> bool:
    """Whether the NVIDIA driver sees a GPU on this machine (where vLLM's CUDA build serves)."""
    from pathlib import Path

    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def vllm_server_prefix() -> list[str]:
    """How a vLLM server is started, up to its model folder: ``VLLM_PYTHON -m vllm.entrypoints.openai.api_server
    --model`` when VLLM_PYTHON names the Python of a vLLM virtualenv (``vllm-cpu``'s ``vllm`` script fails: it
    looks for the metadata of a package named ``vllm``), else ``VLLM_BIN serve``."""
    python = vllm_python()
    if python:
        return [python, "-m", "vllm.entrypoints.openai.api_server", "--model"]
    return [vllm_bin(), "serve"]


def serving_dir():
    from pathlib import Path

    path = Path(settings.VAR_DIR) / "serving"
    path.mkdir(parents=True, exist_ok=True)
    return path


def max_body_bytes() -> int:
    """The largest chat request body the gateway reads (SERVING_MAX_BODY_MB, default 4 MiB); larger gets 413."""
    return int(float(settings.SERVING_MAX_BODY_MB) * 2**20)


def default_max_tokens() -> int:
    """Tokens generated for a call that names no max_tokens (SERVING_DEFAULT_MAX_TOKENS); always capped to the
    model's context minus the prompt."""
    return int(settings.SERVING_DEFAULT_MAX_TOKENS)


def max_generation_seconds() -> float:
    """Seconds one call may generate for (SERVING_MAX_GENERATION_SECONDS); then the gateway stops it."""
    return float(settings.SERVING_MAX_GENERATION_SECONDS)


def requests_per_minute() -> int:
    """Chat calls a minute per API key, or per signed-in user in the console (SERVING_REQUESTS_PER_MINUTE;
    0: no limit); more get 429 with Retry-After."""
    return int(settings.SERVING_REQUESTS_PER_MINUTE)


def concurrent_per_user() -> int:
    """Chat calls one user may have running at once, all keys together (SERVING_CONCURRENT_PER_USER; 0: no
    limit); more get 429 with Retry-After."""
    return int(settings.SERVING_CONCURRENT_PER_USER)
