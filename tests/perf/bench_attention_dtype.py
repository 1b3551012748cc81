"""Attention of one training example on the CPU, forward and backward: fp32 against bf16, in one run.

The engine's segmented attention computes each packed example on its own (SmolLM2-135M's shape: 9 query heads,
3 key/value heads, head size 64, causal). A bf16 run on a CPU with AMX computes its projections in bf16 but its
attention in fp32 (jobs/training/packing.py: segmented_sdpa_forward), because the CPU's bf16 attention kernel is
slower there; this prints by how much, per example length, with the machine it ran on.

    .venv/bin/python tests/perf/bench_attention_dtype.py [--threads 2] [--busy]
"""

from __future__ import annotations

import argparse
import time

import machine
import torch
import torch.nn.functional as F


def seconds_per_call(dtype: torch.dtype, length: int, calls: int) -> float:
    q = torch.randn(1, 9, length, 64, dtype=dtype, requires_grad=True)
    k = torch.randn(1, 3, length, 64, dtype=dtype, requires_grad=True)
    v = torch.randn(1, 3, length, 64, dtype=dtype, requires_grad=True)

    def once():
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).sum().backward()

    for _ in range(3):
        once()
    started = time.perf_counter()
    for _ in range(calls):
        once()
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--busy", action="store_true", help="measure even though the machine is busy")
    args = parser.parse_args()
    machine.require_quiet(args.busy)
    torch.set_num_threads(args.threads)
    print(machine.report(args.threads))
    for length in (32, 64, 96, 128, 256, 512):
        fp32 = seconds_per_call(torch.float32, length, args.calls)
        bf16 = seconds_per_call(torch.bfloat16, length, args.calls)
        print(
            f"{length:4d} tokens: fp32 {fp32 * 1e3:6.2f} ms, bf16 {bf16 * 1e3:6.2f} ms (bf16 / fp32 {bf16 / fp32:.2f}x)"
        )


if __name__ == "__main__":
    main()
