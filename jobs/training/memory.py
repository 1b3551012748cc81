"""Keeping a training worker's resident memory bounded.

Measured on SmolLM2-135M LoRA, 196 short examples, one epoch (2 cores, tests/perf/bench_training_memory.py and
glibc's mallinfo2 at every step): the bytes malloc had handed out grew by about 7 MB a step (601 to 772 MB in 25
steps) and were given back only when the task ended. The cause is PyTorch's ideep layer: it caches a oneDNN
computation for every new input shape (LRU_CACHE_CAPACITY, 1,024 by default), and a packed micro-batch has a new
token count almost every time, so each pass added its linears' kernels. With 16 (every shape of one micro-batch:
4 or 5 linear shapes, reused by all 30 layers) the memory in use stays at 637-640 MB for the whole run, the peak
fell from 1,628 to 1,446 MB (256 MB for activations) and the speed is unchanged (122.6 against 113.6 tokens/s).
oneDNN's own primitive cache (ONEDNN_PRIMITIVE_CACHE_CAPACITY) is bounded the same way.

The rest is glibc's heap: a pass's activations are freed into it and reused by the next pass (malloc_trim
after every step did not lower the peak; a fixed 128 KB mmap threshold costs a mapping and its page faults
per tensor and halved the speed, so it is not set). What a run leaves in the process goes with it: a training
worker runs one task a process (console/celery.py).
"""

from __future__ import annotations

import ctypes
import gc
import os

KERNEL_CACHE_CAPACITY = "16"
# ideep's cache of oneDNN computations (keyed by shape, 1,024 by default) and oneDNN's own primitive cache
KERNEL_CACHE_VARIABLES = ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


def bound_native_caches() -> None:
    """Small kernel caches for ideep and oneDNN (each reads its variable when it first builds a kernel, so call
    it before the first training pass; an operator's own LRU_CACHE_CAPACITY or ONEDNN_PRIMITIVE_CACHE_CAPACITY
    wins)."""
    for name in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(name, KERNEL_CACHE_CAPACITY)


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
