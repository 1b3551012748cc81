"""Keeping a training worker's resident memory bounded.

Measured on SmolLM2-135M LoRA, 312 demo examples, one epoch (2 cores): between steps the process
grew by about 9 MB a step and kept 200 MB after the task even after ``gc`` and ``malloc_trim``. One
cause is oneDNN's primitive cache: a packed micro-batch has a new token count almost every time, so
each one compiles and caches new linear primitives (up to 1,024 of them by default). A cache of 16
holds every shape of one micro-batch (4 or 5 linear shapes, reused by all 30 layers), which is all a
pass reuses: the same tokens/s (181.6 against 183.4 with 64), 90 MB less after the task.

The rest of the growth is glibc's heap: the per-segment attention and LoRA tensors (100 to 200 KB,
a different size every pass) fragment it. A fixed mmap threshold of 128 KB stops the growth, but
every such block then costs a mapping and its page faults: the engine trained at 229 tokens/s
against 481 (measured, same run), so it is not set. What a run leaves in the process goes with it:
a training worker runs one task a process (console/celery.py).
"""

from __future__ import annotations

import ctypes
import gc
import os

ONEDNN_CACHE_CAPACITY = "16"


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


def bound_native_caches() -> None:
    """A small oneDNN primitive cache (read by oneDNN when it first builds a primitive, so call it before the
    first training pass; an operator's own ONEDNN_PRIMITIVE_CACHE_CAPACITY wins)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)


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
