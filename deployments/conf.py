"""Serving settings, read from Django settings with defaults (each can be set by environment variable)."""

from __future__ import annotations

import os

from django.conf import settings


def _get(name: str, default: str) -> str:
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name, default)
    return str(value)


def node_timeout() -> float:
    """Seconds without a heartbeat after which a node counts as gone and its instances are replaced."""
    return float(_get("SERVING_NODE_TIMEOUT", "15"))


def start_timeout() -> float:
    """Seconds an instance may take from start to a healthy /health before it counts as failed."""
    return float(_get("SERVING_START_TIMEOUT", "300"))


def drain_timeout() -> float:
    """Seconds a surplus instance is given to finish in-flight requests before it is stopped."""
    return float(_get("SERVING_DRAIN_TIMEOUT", "30"))


def stop_grace() -> float:
    """Seconds between SIGTERM and SIGKILL when stopping an instance."""
    return float(_get("SERVING_STOP_GRACE", "5"))


def pool_instances() -> int:
    """Instances of the public pool created the first time (operators change it in the admin)."""
    return int(_get("SERVING_POOL_INSTANCES", "1"))


def pool_model_timeout() -> int:
    """Seconds a pool instance keeps an idle model loaded."""
    return int(_get("SERVING_POOL_MODEL_TIMEOUT", "300"))


def vllm_bin() -> str:
    """The ``vllm`` executable of a vLLM node (its own virtualenv)."""
    return _get("VLLM_BIN", "vllm")


def serving_dir():
    from pathlib import Path

    path = Path(settings.VAR_DIR) / "serving"
    path.mkdir(parents=True, exist_ok=True)
    return path
