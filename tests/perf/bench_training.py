"""Training throughput: our engine vs plain transformers / trl, same model, data and settings.

The work is the one LLaMA-Factory 0.9.5 published a figure for (258 tokens/s, measured on another
machine: printed for reference, never divided into a ratio): SmolLM2-135M-Instruct, LoRA r16 /
alpha 32 on all linear layers, batch 8, fp32, 3 epochs, learning rate 2e-3, on 196 short chat
examples of 40-82 tokens (about 12.4k tokens an epoch), generated here deterministically.

tokens/s = all tokens of the rendered examples per epoch x epochs / wall time.
For ours the wall time is the whole ``train()`` call (data preparation, model
loading, progress, a checkpoint per epoch, saving the adapter); for the plain
scripts it is ``trainer.train()`` only (their loading is not counted).

Each contender runs in its own process, one after the other, in the same run (ratios are only
taken between contenders of one run). trl is not one of the console's dependencies: install the
benchmark extra first (``.venv/bin/pip install --require-hashes --no-deps -r requirements/bench.lock``).

    .venv/bin/python tests/perf/bench_training.py                 # ours, plain HF Trainer, trl SFTTrainer
    .venv/bin/python tests/perf/bench_training.py --epochs 1 --only ours hf
    .venv/bin/python tests/perf/bench_training.py --only ours hf ours-bf16 hf-bf16   # a bf16 CPU (AMX)
    .venv/bin/python tests/perf/bench_training.py --epochs 1 --only ours hf --repeat 3  # medians of 3 rounds

"ours" and "hf" are fp32 against fp32; "ours-bf16" (the engine's default where the CPU has AMX or
AVX512-BF16, see jobs.training.engine.use_bf16) is printed beside the Trainer with ``bf16=True``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The repository has a Django app called "datasets" that would shadow Hugging Face's
# (trl and the Trainer use the latter): import Hugging Face's first, then add the repository.
import datasets  # noqa: E402,F401  (Hugging Face datasets)

sys.path.insert(0, str(REPO))
from workload import peer_like_examples, trainer_rows  # noqa: E402  (tests/perf/workload.py, beside this script)

MODEL_DIR = Path(os.environ.get("CONSOLE_MODELS_DIR") or REPO / "var" / "models") / "smollm2-135m-instruct"
# Published for similar work on another machine: shown beside our figure, not comparable to it.
LLAMA_FACTORY_ELSEWHERE_TOKENS_PER_SECOND = 258.0


def rendered_tokens(tokenizer, examples: list[dict]) -> int:
    return sum(len(tokenizer.apply_chat_template(e["messages"], tokenize=True, return_dict=False)) for e in examples)


def _warmup(n_examples: int, args) -> int:
    """Warm-up steps as the engine computes them (3% of the steps, rounded up)."""
    import math

    return math.ceil(0.03 * math.ceil(n_examples / 8) * args.epochs)


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def use_repository_datasets() -> None:
    """Our engine imports the repository's ``datasets`` app (datasets.rendering), which Hugging Face's
    shadows once imported: drop the latter in a process that runs only our engine."""
    for name in [n for n in sys.modules if n == "datasets" or n.startswith("datasets.")]:
        del sys.modules[name]
    sys.path.remove(str(REPO))
    sys.path.insert(0, str(REPO))


def from_repository(load):
    """``load()`` importing the engine (which imports the repository's ``datasets`` app) in a process that
    keeps Hugging Face's ``datasets`` for the Trainer: run it with the repository's, then put HF's back."""
    hf = {n: m for n, m in sys.modules.items() if n == "datasets" or n.startswith("datasets.")}
    use_repository_datasets()
    try:
        return load()
    finally:
        for name in [n for n in sys.modules if n == "datasets" or n.startswith("datasets.")]:
            del sys.modules[name]
        sys.modules.update(hf)


def import_renderer():
    """The engine's renderer, for the plain Trainer's process."""

    def load():
        from jobs.training.render import Renderer

        return Renderer

    return from_repository(load)


def physical_cores() -> int:
    def load():
        from jobs.training.engine import physical_cores

        return physical_cores()

    return from_repository(load)


def run_ours(examples, args, precision: str = "fp32") -> dict:
    use_repository_datasets()
    from jobs.training import TrainingConfig, train

    config = TrainingConfig(
        n_epochs=args.epochs,
        batch_size=8,
        learning_rate=2e-3,
        lora_r=16,
        lora_alpha=32,
        lora_target="all-linear",
        num_threads=args.threads,
        packing=not args.no_packing,
        precision=precision,
    )
    with tempfile.TemporaryDirectory() as out:
        cpu, started = _cpu_seconds(), time.perf_counter()
        result = train(
            model_dir=MODEL_DIR, train_examples=examples, eval_examples=None, config=config, output_dir=Path(out)
        )
        wall = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu
    losses = [h["loss"] for h in result.history]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "loop_tokens_per_second": result.tokens_per_second,
        "first_loss": losses[0],
        "final_loss": result.final_loss,
        "steps": result.steps,
    }


def run_hf(examples, args, bf16: bool = False) -> dict:
    """A minimal plain transformers Trainer: same rendering and assistant-only labels, padded batches
    (``bf16``: the Trainer's own bf16 autocast on the CPU, fp32 weights)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    Renderer = import_renderer()  # noqa: N806
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    renderer = Renderer(tokenizer, 2048)
    rows = trainer_rows(renderer, examples)
    model = AutoModelForCausalLM.from_pretrained(str(MODEL_DIR), dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, _lora_config())
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=8,
            num_train_epochs=args.epochs,
            learning_rate=2e-3,
            lr_scheduler_type="linear",
            warmup_steps=_warmup(len(examples), args),
            logging_steps=5,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            seed=42,
            bf16=bf16,
        )
        trainer = Trainer(
            model=model,
            args=targs,
            train_dataset=rows,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        )
        return _timed_train(trainer)


def run_trl(examples, args) -> dict:
    """trl's SFTTrainer with its defaults, only the hyperparameters matched."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from datasets import Dataset  # Hugging Face's (imported at the top, before the repository's app)

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    model = AutoModelForCausalLM.from_pretrained(str(MODEL_DIR), dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=8,
            num_train_epochs=args.epochs,
            learning_rate=2e-3,
            lr_scheduler_type="linear",
            warmup_steps=_warmup(len(examples), args),
            logging_steps=5,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            max_length=2048,
            seed=42,
            bf16=False,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(examples),
            processing_class=tokenizer,
            peft_config=_lora_config(),
        )
        return _timed_train(trainer)


def _timed_train(trainer) -> dict:
    """Run ``trainer.train()`` and report wall and CPU time with the logged losses."""
    cpu, started = _cpu_seconds(), time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h] or [
        h["train_loss"] for h in trainer.state.log_history if "train_loss" in h
    ]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "steps": trainer.state.global_step,
    }


RUNNERS = {
    "ours": run_ours,
    "hf": run_hf,
    "trl": run_trl,
    "ours-bf16": lambda examples, args: run_ours(examples, args, precision="bf16"),
    "hf-bf16": lambda examples, args: run_hf(examples, args, bf16=True),
}
LABELS = {
    "ours": "ours (jobs.training.train), fp32",
    "hf": "plain transformers Trainer, fp32",
    "trl": "trl SFTTrainer defaults, fp32",
    "ours-bf16": "ours, bf16 autocast",
    "hf-bf16": "plain Trainer, bf16=True",
}
# (numerator, denominator) of each printed ratio, where both ran
RATIOS = [("ours", "hf"), ("ours", "trl"), ("ours-bf16", "hf-bf16"), ("ours-bf16", "hf"), ("ours-bf16", "ours")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=196)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--only", nargs="+", choices=sorted(RUNNERS), default=["ours", "hf", "trl"])
    parser.add_argument("--no-packing", action="store_true", help="ours with padded batches instead of packing")
    parser.add_argument("--child", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--busy", action="store_true", help="measure even though the machine is busy")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every contender, interleaved (ours, hf, ours, hf, ...); the medians are compared",
    )
    args = parser.parse_args()
    import machine
    from transformers import AutoTokenizer

    if not args.threads:
        args.threads = physical_cores()
    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    examples = peer_like_examples(tokenizer, args.examples)
    per_epoch = rendered_tokens(tokenizer, examples)
    if args.child:
        print(json.dumps(RUNNERS[args.child](examples, args)))
        return

    machine.require_quiet(args.busy)
    print(machine.report(args.threads))
    lengths = [len(tokenizer.apply_chat_template(e["messages"], tokenize=True, return_dict=False)) for e in examples]
    print(
        f"model {MODEL_DIR.name}; {len(examples)} examples, {min(lengths)}-{max(lengths)} tokens each, "
        f"{per_epoch} tokens/epoch x {args.epochs} epochs; LoRA r16 a32 all-linear, batch 8, lr 2e-3, "
        f"{args.threads} threads; {os.cpu_count()} CPUs"
    )
    runs: dict[str, list[dict]] = {}
    # interleaved rounds: a machine whose speed drifts (other VMs on its host) shifts every contender alike
    for name in [n for _round in range(args.repeat) for n in args.only]:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--epochs",
            str(args.epochs),
            "--examples",
            str(args.examples),
            "--threads",
            str(args.threads),
        ] + (["--no-packing"] if args.no_packing else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode or not line.startswith("{"):
            print(f"{name} failed:\n{proc.stderr[-3000:]}")
            continue
        result = json.loads(line)
        result["tokens_per_second"] = per_epoch * args.epochs / result["wall_s"]
        runs.setdefault(name, []).append(result)
        # cores actually given to the run (others may share the machine): CPU time / wall time
        result["cores_used"] = result["cpu_s"] / result["wall_s"]
        print(
            f"{LABELS[name]:32s} {result['wall_s']:7.1f} s  {result['tokens_per_second']:7.1f} tokens/s  "
            f"({result['cores_used']:.2f} cores busy)  "
            f"loss {result['first_loss']:.3f} -> {result['final_loss']:.3f}  ({result['steps']} steps)",
            flush=True,
        )
    # each contender's median run (by tokens/s)
    results = {n: sorted(r, key=lambda x: x["tokens_per_second"])[len(r) // 2] for n, r in runs.items()}
    if args.repeat > 1:
        for name, rs in runs.items():
            speeds = ", ".join(f"{r['tokens_per_second']:.1f}" for r in rs)
            print(f"{LABELS[name]:32s} median {results[name]['tokens_per_second']:7.1f} tokens/s  (runs: {speeds})")
    for top, bottom in RATIOS:
        if top in results and bottom in results:
            print(f"{top} / {bottom}: {results[top]['tokens_per_second'] / results[bottom]['tokens_per_second']:.2f}x")
    if "ours" in results or "ours-bf16" in results:
        print(
            f"(LLaMA-Factory published {LLAMA_FACTORY_ELSEWHERE_TOKENS_PER_SECOND:.0f} tokens/s for similar work, "
            "measured on another machine: not comparable, no ratio)"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"tokens_per_epoch": per_epoch, "results": results, "runs": runs}, indent=2)
        )


if __name__ == "__main__":
    main()
