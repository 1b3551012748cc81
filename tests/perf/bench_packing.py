"""Packing vs naive padding on examples of mixed lengths (about 20 to 600 tokens).

Both runs use the engine (``jobs.training.train``) with the same model, data,
order and hyperparameters; only ``packing`` differs. Packing lays a step's
examples end to end (attention per example), padding right-pads each example to
the longest of its batch. Prints tokens/s of each, the ratio (target >= 1.3x), and
the loss curves (per-step losses, first/last/mean per epoch) to show their shape is the same.

    .venv/bin/python tests/perf/bench_packing.py [--examples 48] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

MODEL_DIR = Path(os.environ.get("CONSOLE_MODELS_DIR") or REPO / "var" / "models") / "smollm2-135m-instruct"

TEXT = (
    "the console trains small language models on two cores and reports every number it measures so the team "
    "can trust the loss curve the progress bar and the estimated time left while the kettle boils and the "
    "printer jams again in the corner of the office next to the window"
).split()


def mixed_examples(tokenizer, n: int, lo: int = 20, hi: int = 600, seed: int = 1) -> list[dict]:
    """``n`` chat examples with rendered lengths spread uniformly over [lo, hi] tokens."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        target = lo + (hi - lo) * i // max(1, n - 1)
        words = max(1, target - 12)  # about one token a word; trimmed to the target below
        q_words = max(1, words // 4)
        question = " ".join(rng.choice(TEXT) for _ in range(q_words)) + "?"
        answer = " ".join(rng.choice(TEXT) for _ in range(max(1, words - q_words))) + "."
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        # trim the answer until the rendered example fits the target length
        while len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)) > max(target, lo):
            cut = messages[2]["content"].rsplit(" ", 1)[0]
            if cut == messages[2]["content"]:
                break
            messages[2]["content"] = cut
        examples.append({"messages": messages})
    rng.shuffle(examples)
    return examples


def run(examples, packing: bool, args) -> dict:
    from jobs.training import TrainingConfig, train

    config = TrainingConfig(
        n_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        packing=packing,
        metrics_interval=0.0,
        num_threads=args.threads,
    )
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = train(
            model_dir=MODEL_DIR, train_examples=examples, eval_examples=None, config=config, output_dir=Path(out)
        )
        wall = time.perf_counter() - started
    steps_per_epoch = result.steps // args.epochs
    # metrics_interval=0: one report per step (the epoch-end report closes each epoch)
    per_step = [h["loss"] for h in result.history][: result.steps]
    epochs = []
    for e in range(args.epochs):
        chunk = per_step[e * steps_per_epoch : (e + 1) * steps_per_epoch]
        epochs.append({"first": chunk[0], "last": chunk[-1], "mean": sum(chunk) / len(chunk)})
    return {
        "wall_s": wall,
        "tokens": result.trained_tokens,
        "tokens_per_second": result.trained_tokens / wall,
        "loop_tokens_per_second": result.tokens_per_second,
        "per_step_loss": per_step,
        "epochs": epochs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    examples = mixed_examples(tokenizer, args.examples)
    lengths = [len(tokenizer.apply_chat_template(e["messages"], tokenize=True, return_dict=False)) for e in examples]
    print(
        f"{len(examples)} examples of {min(lengths)}-{max(lengths)} tokens ({sum(lengths)} tokens/epoch), "
        f"{args.epochs} epochs, batch {args.batch_size}, LoRA r16 all-linear, lr {args.lr}"
    )
    results = {}
    for packing in (True, False):
        name = "packing" if packing else "padding"
        results[name] = r = run(examples, packing, args)
        print(f"{name:8s} {r['wall_s']:7.1f} s  {r['tokens_per_second']:7.1f} tokens/s", flush=True)
        for e, stats in enumerate(r["epochs"], 1):
            print(f"   epoch {e}: loss first {stats['first']:.4f} last {stats['last']:.4f} mean {stats['mean']:.4f}")
    ratio = results["packing"]["tokens_per_second"] / results["padding"]["tokens_per_second"]
    a, b = results["packing"]["per_step_loss"], results["padding"]["per_step_loss"]
    worst = max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=False))
    print(f"packing / padding: {ratio:.2f}x; per-step losses differ by at most {worst:.2%}")
    print("per-step loss, packing:", " ".join(f"{x:.3f}" for x in a))
    print("per-step loss, padding:", " ".join(f"{x:.3f}" for x in b))
    if args.json:
        Path(args.json).write_text(json.dumps({"ratio": ratio, "max_rel_diff": worst, **results}, indent=2))


if __name__ == "__main__":
    main()
