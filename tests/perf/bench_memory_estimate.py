"""The training memory estimate (jobs.training.budget.estimate_training_memory) against the peak RSS
of a real run on this CPU: SmolLM2-135M-Instruct (``var/models``), LoRA r16 all-linear, fp32.

Each run is a fresh process (the estimate counts the process itself: torch and transformers loaded).
The run's micro-batch holds one longest example, the estimate's smallest micro-batch; a second run
per length uses the engine's default plan (micro-batches filling ``activation_memory_mb``), estimated with
that budget as the create form does on a CPU node.

    .venv/bin/python tests/perf/bench_memory_estimate.py
    .venv/bin/python tests/perf/bench_memory_estimate.py --tokens 256 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
MODEL_DIR = REPO / "var" / "models" / "smollm2-135m-instruct"
WORDS = "first check the power and then look at the small label on the back because most problems come".split()


def hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def examples_of(tokenizer, tokens: int, n: int) -> list[dict]:
    """``n`` chat examples of about ``tokens`` rendered tokens each."""
    out = []
    for i in range(n):
        words = max(1, tokens - 40)
        answer = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words))
        out.append(
            {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": answer}]}
        )
    return out


def child(args) -> dict:
    import torch  # noqa: F401
    from transformers import AutoTokenizer

    from jobs.training import TrainingConfig, train
    from jobs.training.budget import ModelShape, estimate_training_memory
    from jobs.training.render import Renderer

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    examples = examples_of(tokenizer, args.child, 16)
    renderer = Renderer(tokenizer, 2048)
    longest = max(len(renderer.encode_sft(e).input_ids) for e in examples)
    config_json = json.loads((MODEL_DIR / "config.json").read_text())
    config = TrainingConfig(
        n_epochs=1,
        batch_size=8,
        lora_r=16,
        lora_alpha=32,
        lora_target="all-linear",
        micro_batch_tokens=None if args.default_plan else longest,
        checkpoint_interval=None,
    )
    # the default plan fills the CPU's activation budget, as the console's estimate counts it (jobs.services)
    budget = config.activation_memory_mb * 2**20 if args.default_plan else None
    estimate = estimate_training_memory(
        shape=ModelShape.from_dict(config_json),
        training_type="lora",
        bf16=False,
        longest_sequence=longest,
        available=64 * 2**30,
        activation_budget=budget,
    )
    with tempfile.TemporaryDirectory() as out:
        train(model_dir=MODEL_DIR, train_examples=examples, eval_examples=None, config=config, output_dir=Path(out))
    return {"longest": longest, "estimate_mb": estimate.total / 2**20, "peak_mb": hwm_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--default-plan", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    for tokens in args.tokens:
        for default_plan in (False, True):
            cmd = [sys.executable, __file__, "--child", str(tokens)] + (["--default-plan"] if default_plan else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode or not lines or not lines[-1].startswith("{"):
                print(f"{tokens} tokens failed:\n{proc.stderr[-3000:]}")
                continue
            r = json.loads(lines[-1])
            plan = "default plan" if default_plan else "one example a micro-batch"
            print(
                f"longest {r['longest']:5d} tokens, {plan:25s}: estimate {r['estimate_mb']:6.0f} MB, "
                f"peak RSS {r['peak_mb']:6.0f} MB ({r['peak_mb'] / r['estimate_mb']:.2f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
