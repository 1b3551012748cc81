"""Training memory: resident memory of a training worker around a 135M LoRA task, and peak RSS and
tokens/s of our engine against a plain transformers Trainer on the same work, in the same run.

Each contender runs in a fresh process that first imports what a training worker preloads
(torch, transformers, peft, the engine: CONSOLE_PRELOAD_TRAINING), as ``./run up``'s trainer does:

* ``preloaded``: RSS after those imports, before the task;
* ``peak``: the highest RSS while the task runs (sampled every 20 ms, and the kernel's VmHWM);
* ``after``: RSS once the task has returned (what the worker holds while it waits for the next);
* ``after 2nd``: the same after a second task in the same process (memory must not ratchet up).

The work: SmolLM2-135M-Instruct (``var/models``), LoRA r16/a32 all-linear, batch 8, fp32, the
benchmark's peer-like chat examples (tests/perf/bench_training.py), 1 epoch by default.

    .venv/bin/python tests/perf/bench_training_memory.py
    .venv/bin/python tests/perf/bench_training_memory.py --epochs 2 --only ours
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_training as bt  # noqa: E402  (imports Hugging Face datasets before the repository's app)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakSampler:
    def __init__(self, interval: float = 0.02):
        self.interval, self.peak = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self):
        self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def child(name: str, args) -> dict:
    # what the training worker preloads (console/celery.py: _preload_training)
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoTokenizer

    if name.startswith("ours"):
        bt.use_repository_datasets()
    else:
        bt.import_renderer()  # the Trainer keeps Hugging Face's datasets
    from jobs.training import engine

    tokenizer = AutoTokenizer.from_pretrained(str(bt.MODEL_DIR))
    examples = bt.peer_like_examples(tokenizer, args.examples)
    if not args.threads:
        args.threads = engine.physical_cores()
    out = {"preloaded_mb": rss_mb()}
    runs = []
    for _ in range(2 if name.startswith("ours") else 1):
        with PeakSampler() as sampler:
            result = bt.RUNNERS[name](examples, args)
        if name.startswith("ours"):
            from jobs.training.memory import release_memory  # noqa: I001

            release_memory()  # what the worker does after every task (jobs.tasks.train_next)
        runs.append({"peak_mb": sampler.peak, "after_mb": rss_mb(), "wall_s": result["wall_s"]})
    out.update(runs=runs, hwm_mb=hwm_mb(), tokens=bt.rendered_tokens(tokenizer, examples) * args.epochs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--examples", type=int, default=196)
    parser.add_argument("--threads", type=int, default=None)
    contenders = ["ours", "ours-bf16", "hf"]  # ours fp32, ours bf16 (the default on a CPU with AMX or AVX512-BF16)
    parser.add_argument("--only", nargs="+", choices=contenders, default=contenders)
    parser.add_argument("--no-packing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=contenders, help=argparse.SUPPRESS)
    parser.add_argument("--busy", action="store_true", help="measure even though the machine is busy")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    import machine

    machine.require_quiet(args.busy)
    print(machine.report(args.threads))
    print(f"model {bt.MODEL_DIR.name}; {args.examples} examples x {args.epochs} epoch(s); LoRA r16 a32, batch 8")
    results = {}
    for name in args.only:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--epochs",
            str(args.epochs),
            "--examples",
            str(args.examples),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=bt.REPO)
        line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode or not line.startswith("{"):
            print(f"{name} failed:\n{proc.stderr[-3000:]}")
            continue
        r = results[name] = json.loads(line)
        first = r["runs"][0]
        r["tokens_per_second"] = r["tokens"] / first["wall_s"]
        after = "  ".join(f"after task {i + 1} {run['after_mb']:6.0f} MB" for i, run in enumerate(r["runs"]))
        print(
            f"{bt.LABELS[name]:28s} preloaded {r['preloaded_mb']:5.0f} MB  peak {first['peak_mb']:6.0f} MB "
            f"(VmHWM {r['hwm_mb']:6.0f})  {after}  {r['tokens_per_second']:6.1f} tokens/s",
            flush=True,
        )
    for name in ("ours", "ours-bf16"):
        if name in results and "hf" in results:
            ours, hf = results[name], results["hf"]
            print(
                f"{name} / plain Trainer: peak memory {ours['runs'][0]['peak_mb'] / hf['runs'][0]['peak_mb']:.2f}x, "
                f"tokens/s {ours['tokens_per_second'] / hf['tokens_per_second']:.2f}x"
            )
    for name in ("ours", "ours-bf16"):
        if name not in results:
            continue
        ours = results[name]
        print(
            f"{name}: {max(run['after_mb'] for run in ours['runs']) / ours['preloaded_mb']:.2f}x the preloaded size "
            "after a task in the same process (a training worker runs one task a process, so its next process "
            "starts at the preloaded size: scripts/demo_resume.py measures that); peak target <= 1536 MB"
        )


if __name__ == "__main__":
    main()
