"""The console's multi-LoRA linear (deployments/vllm_plugin) against vLLM's own CPU op, one layer at a time, in
one run: the four LoRA'd modules of a SmolLM2-135M layer (qkv, o, gate_up, down; rank 16, 21 adapter slots),
float32 and bfloat16, at the batches a pool instance sees (decoding 8 rows on one adapter or on 7 and a base
row, a prefill of 300 rows), each path of ours (the C kernel, the grouped products) and the one it chooses.
On as many threads as the machine has CPUs, as an instance computes (its model runs on all of them; the kernel
splits a call's rows between PyTorch's OpenMP threads), or ``--threads N``. Prints microseconds a layer and the
ratio.

    PYTHONPATH=deployments/vllm_plugin .venv-vllm/bin/python tests/perf/bench_lora_ops.py [--threads N]
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deployments" / "vllm_plugin"))
sys.path.insert(0, str(ROOT / "tests"))
from console_vllm import punica  # noqa: E402
from vllm_plugin_check import vllm_ops  # noqa: E402

SLOTS, RANK = 21, 16
LAYER = {"qkv": (576, (576, 192, 192)), "o": (576, (576,)), "gate_up": (576, (1536, 1536)), "down": (1536, (576,))}


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def timed(fn, rounds: int = 20) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e6


def layer_us(wrapper, weights, rows: int, dtype) -> float:
    total = 0.0
    for name, (fan_in, sizes) in LAYER.items():
        a, b = weights[name]
        x = torch.randn(rows, fan_in).to(dtype)
        y = torch.zeros(rows, sum(sizes)).to(dtype)
        total += timed(lambda: wrapper.add_lora_linear(y, x, a, b, 1.0, sizes))  # noqa: B023
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    threads = parser.parse_args().threads
    torch.set_num_threads(threads)
    print(f"cpu: {cpu()}; torch {torch.__version__}; kernel built: {punica._KERNEL is not None}; {threads} thread(s)")
    cases = {
        "decode 8 rows, one adapter": torch.full((8,), 3),
        "decode 8 rows, 7 adapters + base": torch.tensor([0, 1, 2, 3, 4, 5, 6, -1]),
        "mixed 40 rows, 8 adapters": torch.arange(8).repeat_interleave(5),
        # a new call's prompt prefilled beside 7 calls decoding, each on its own adapter (the round-robin's step)
        "prompt 48 rows + 7 decoding": torch.tensor([0] * 48 + [1, 2, 3, 4, 5, 6, 7]),
        "prefill 300 rows, 8 adapters": torch.arange(8).repeat_interleave(38)[:300],
        "prefill 300 rows, one adapter": torch.full((300,), 5),
    }
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(0)
        weights = {
            n: (
                tuple((torch.randn(SLOTS, 1, RANK, i, generator=g) * 0.05).to(dtype) for _ in s),
                tuple((torch.randn(SLOTS, 1, o, RANK, generator=g) * 0.05).to(dtype) for o in s),
            )
            for n, (i, s) in LAYER.items()
        }
        for case, indices in cases.items():
            rows = indices.numel()
            vllm_us = layer_us(vllm_ops(indices), weights, rows, dtype)
            ours = punica.GroupedPunicaWrapperCPU(4096, 512, "cpu")
            found = {}
            default = punica.KERNEL_ROWS
            for path, limit in (("chosen", default), ("kernel", 10**6), ("grouped", 0)):
                punica.KERNEL_ROWS = limit
                ours.group(indices)  # which adapters the kernel takes is chosen a step
                found[path] = layer_us(ours, weights, rows, dtype)
            punica.KERNEL_ROWS = default
            name = str(dtype).removeprefix("torch.")
            print(
                f"{name:9s} {case:34s} vLLM {vllm_us:8.0f} us  ours {found['chosen']:7.0f} us "
                f"({vllm_us / found['chosen']:4.1f}x; kernel {found['kernel']:.0f}, grouped {found['grouped']:.0f})"
            )


if __name__ == "__main__":
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    main()
