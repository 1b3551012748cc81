"""What a benchmark prints about the machine it ran on, and its refusal to time a busy one.

Figures differ between CPUs (AVX2, AVX-512, AMX: the engine's 2x lead on one was 1.0x on another) and a busy
machine cuts them to a third: every benchmark prints the CPU model and flags, torch's oneDNN and MKL, the
threads it uses and the load before it starts, and stops when the machine is busy unless told to go on."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in FLAGS if f in present]
    except OSError:
        pass
    return []


def libraries() -> str:
    try:
        import torch

        onednn = torch.backends.mkldnn.is_available() and getattr(torch._C, "_onednn_version", None)
        parts = [f"torch {torch.__version__}"]
        config = torch.__config__.show()
        for line in config.splitlines():
            line = line.strip()
            if line.startswith(
                ("- Intel(R) oneAPI Math Kernel", "- Intel(R) Math Kernel", "- Intel(R) MKL-DNN", "- oneDNN")
            ):
                parts.append(line.lstrip("- ").split(" for ")[0][:80])
        if onednn:
            parts.append(f"oneDNN {onednn}")
        return "; ".join(parts)
    except Exception as exc:  # noqa: BLE001 - a report, never a failure
        return f"torch not importable ({exc})"


def load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def report(threads: int | None = None) -> str:
    flags = ", ".join(cpu_flags()) or "no AVX2"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    line = f"machine: {cpu_model()} ({cores} CPUs; {flags}); {libraries()}; load {load():.2f} before starting"
    if threads:
        line += f"; {threads} threads"
    return line


def require_quiet(allow_busy: bool, limit: float = 0.5) -> None:
    """Stop unless the machine is quiet (1-minute load under ``limit``), or ``allow_busy``."""
    busy = load()
    if busy >= limit and not allow_busy:
        print(
            f"The machine is busy (load {busy:.2f}): its figures would not be this machine's. Wait, or pass "
            "--busy to measure anyway (and say so next to the figures).",
            file=sys.stderr,
        )
        sys.exit(3)
