"""The vLLM plugin's C kernel (deployments/vllm_plugin/console_vllm/kernel.py) as a machine builds it: with OpenMP
where the compiler has it, else without (one thread), both computing y += B @ (scale * A @ x) for the rows with an
adapter and leaving the others. Plain ctypes in the console's own Python: no vLLM or PyTorch needed
(tests/test_vllm_plugin.py checks the kernel inside vLLM against vLLM's own op)."""

from __future__ import annotations

import ctypes
import importlib.util
import random
import shutil

import pytest

from .serving_support import ROOT

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)")
SOURCE = ROOT / "deployments" / "vllm_plugin" / "console_vllm" / "kernel.py"


def _kernel_module():
    spec = importlib.util.spec_from_file_location("console_vllm_kernel_under_test", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _apply(fn) -> tuple[list[float], list[float]]:
    """One layer of one slice (rank 4, 8 in, 6 out, 2 slots) on 3 rows: slot 1, none, slot 0. The kernel's y
    and the same sums in Python."""
    rng = random.Random(7)
    slots, rank, fan_in, fan_out, scale = 2, 4, 8, 6, 0.5
    row_slots = [1, -1, 0]
    a = [rng.uniform(-1, 1) for _ in range(slots * rank * fan_in)]
    b = [rng.uniform(-1, 1) for _ in range(slots * fan_out * rank)]
    x = [rng.uniform(-1, 1) for _ in range(len(row_slots) * fan_in)]
    y = [rng.uniform(-1, 1) for _ in range(len(row_slots) * fan_out)]
    want = list(y)
    for t, k in enumerate(row_slots):
        if k < 0:
            continue
        down = [
            scale * sum(a[(k * rank + j) * fan_in + i] * x[t * fan_in + i] for i in range(fan_in)) for j in range(rank)
        ]
        for o in range(fan_out):
            want[t * fan_out + o] += sum(b[(k * fan_out + o) * rank + q] * down[q] for q in range(rank))
    f32, i64 = ctypes.c_float, ctypes.c_int64
    a_c, b_c, x_c, y_c = ((f32 * len(v))(*v) for v in (a, b, x, y))
    status = fn(
        0,
        len(row_slots),
        (i64 * 3)(*row_slots),
        x_c,
        fan_in,
        fan_in,
        y_c,
        fan_out,
        1,
        (ctypes.c_void_p * 1)(ctypes.addressof(a_c)),
        (ctypes.c_void_p * 1)(ctypes.addressof(b_c)),
        (i64 * 1)(rank),
        (i64 * 1)(fan_out),
        (i64 * 1)(fan_out),
        (i64 * 1)(0),
        scale,
    )
    assert status == 0
    return list(y_c), want


def test_the_kernel_builds_with_openmp_and_computes_the_rows_with_an_adapter(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSOLE_VLLM_CACHE", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    kernel = _kernel_module()
    built = kernel.build()
    assert b"libgomp.so.1" in built.read_bytes()  # the name torch's own libgomp has: one runtime in an instance
    got, want = _apply(kernel.load())
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_a_compiler_without_openmp_builds_it_on_one_thread(tmp_path, monkeypatch):
    """A compiler that refuses -fopenmp (clang without libomp, say): the kernel is built without it and computes
    the same."""
    wrapper = tmp_path / "cc-no-openmp"
    wrapper.write_text(
        '#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && { echo "no openmp" >&2; exit 1; }; done\nexec cc "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("CONSOLE_VLLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(wrapper))
    kernel = _kernel_module()
    built = kernel.build()
    assert b"libgomp" not in built.read_bytes()
    got, want = _apply(kernel.load())
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
