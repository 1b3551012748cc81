"""Keeping a training worker's resident memory bounded (the process lives on for the next task).

Measured on SmolLM2-135M LoRA, 312 demo examples, one epoch (2 cores): between steps the process
grew by about 9 MB a step and kept 200 MB after the task even after ``gc`` and ``malloc_trim``. The
cause is oneDNN's primitive cache: a packed micro-batch has a new token count almost every time, so
each one compiles and caches new linear primitives (up to 1,024 of them by default). A cache of 16
holds every shape of one micro-batch (4 or 5 linear shapes, reused by all 30 layers), which is all a
pass reuses: the same tokens/s (181.6 against 183.4 with 64), 90 MB less after the task, no creep.

Measured on SmolLM2-135M LoRA (tests/perf/bench_training_memory.py): with glibc's defaults the
worker grew step after step and kept it after the task. glibc serves a large free() back into
its heap once its *dynamic* mmap threshold has risen (it rises to the size of every freed mmapped
block, up to 32 MB), so the activations of each step (blocks of a few MB) stay in fragmented
arenas, one per allocating thread, instead of going back to the kernel. A fixed threshold keeps
every block over 128 KB in its own mapping, returned to the kernel when the tensor is freed.
"""

from __future__ import annotations

import ctypes
import gc
import os

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


ONEDNN_CACHE_CAPACITY = "16"


def tune_malloc() -> bool:
    """Fixed mmap threshold (no dynamic rise), few arenas and a small oneDNN primitive cache (read by
    oneDNN when it first builds a primitive; an operator's own setting wins); True where glibc took them."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return bool(libc.mallopt(M_ARENA_MAX, 2) == 1 and ok)


def release_memory() -> None:
    """After a task: free what it left (unreachable objects, CUDA's cache) and trim glibc's heaps."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
